"""Tasks: observation names and shapes, action bounds, success detection, seeding, state round trips."""

from __future__ import annotations

import numpy as np
import pytest

from csil_diag.envs.culling import outside_frustum
from csil_diag.envs.tasks import (
    ACTION_DIM,
    RobosuiteTask,
    env_args,
    make_env,
    quat_to_axis_angle,
    task_from_env_name,
)
from csil_diag.errors import UserError

OBJECT_DIMS = {"lift": 10, "can": 14, "square": 14}


@pytest.mark.parametrize("task", ["lift", "can", "square"])
def test_observation_names_and_shapes(task: str) -> None:
    with make_env(task, seed=0) as env:
        obs = env.reset(seed=1)
        assert obs["eef"].shape == (8,)
        assert obs["joints"].shape == (9,)
        assert obs["object"].shape == (OBJECT_DIMS[task],)
        for key in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos"):
            assert key in obs
        # eef = position, axis-angle of the eef quaternion, gripper fingers
        np.testing.assert_allclose(obs["eef"][:3], obs["robot0_eef_pos"], atol=1e-6)
        np.testing.assert_allclose(obs["eef"][6:], obs["robot0_gripper_qpos"], atol=1e-6)
        np.testing.assert_allclose(obs["joints"][:7], obs["robot0_joint_pos"], atol=1e-6)
        assert "agentview" not in obs and not env.is_success()
        assert env.horizon == 400


def test_cameras_are_upright_images() -> None:
    with make_env("lift", cameras=("agentview", "wrist"), image_size=48, seed=0) as env:
        obs = env.reset(seed=0)
        for cam in ("agentview", "wrist"):
            assert obs[cam].shape == (48, 48, 3) and obs[cam].dtype == np.uint8
            assert obs[cam].std() > 5  # a real picture, not a blank buffer
        assert obs["agentview"] is obs["agentview_image"]
        # Right way up: agentview looks down at the table, so the bottom rows (near the camera) are
        # table, the top rows farther away and darker (the floor/wall behind).
        img = obs["agentview"].astype(float)
        assert img[-8:].mean() > img[:8].mean()


def test_actions_are_clipped_to_bounds() -> None:
    with make_env("lift", seed=0) as env:
        env.reset(seed=0)
        before = env.env.sim.data.qpos.copy()
        env.step(np.full(ACTION_DIM, 50.0))
        after_big = env.env.sim.data.qpos.copy()
        env.reset(seed=0)
        env.step(np.ones(ACTION_DIM))
        np.testing.assert_allclose(after_big, env.env.sim.data.qpos, atol=1e-9)
        assert not np.allclose(before, after_big)
        with pytest.raises(ValueError):
            env.step(np.zeros(ACTION_DIM + 1))


def test_success_detection_and_termination() -> None:
    with make_env("lift", seed=0) as env:
        env.reset(seed=0)
        raw = env.env
        joint = raw.cube.joints[0]
        pose = raw.sim.data.get_joint_qpos(joint).copy()
        pose[2] += 0.10  # lift the cube 10 cm
        raw.sim.data.set_joint_qpos(joint, pose)
        raw.sim.forward()
        assert env.is_success()
        # one 50 ms step lets the cube fall ~1 cm: still lifted, so the episode ends as a success
        _, reward, done, info = env.step(np.zeros(ACTION_DIM))
        assert info["success"] and done and reward == 1.0
        env.reset(seed=0)
        assert not env.is_success()


def test_horizon_ends_episode() -> None:
    with make_env("lift", seed=0, horizon=5) as env:
        env.reset(seed=0)
        dones = [env.step(np.zeros(ACTION_DIM))[2] for _ in range(5)]
        assert dones == [False] * 4 + [True]
        with pytest.raises(RuntimeError):
            env.step(np.zeros(ACTION_DIM))


def test_seeded_resets_reproduce_and_differ() -> None:
    with make_env("can", seed=0) as env:
        a = env.reset(seed=7)["object"]
        b = env.reset(seed=8)["object"]
        c = env.reset(seed=7)["object"]
        np.testing.assert_array_equal(a, c)
        assert not np.allclose(a[:3], b[:3])


def test_state_round_trip_replays_exactly() -> None:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (30, ACTION_DIM))
    with make_env("lift", seed=0) as env:
        env.reset(seed=3)
        s0 = env.get_state()
        first = [env.step(a)[0]["object"] for a in actions]
        env.reset(seed=99)  # a different episode in between
        env.reset_to_state(s0)
        second = [env.step(a)[0]["object"] for a in actions]
    np.testing.assert_allclose(np.array(first), np.array(second), atol=1e-5)


def test_quat_to_axis_angle_known_values() -> None:
    s = np.sqrt(0.5)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0, 0, 0, 1.0])), [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0, 0, s, s])), [0, 0, np.pi / 2], atol=1e-9)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([1.0, 0, 0, 0])), [np.pi, 0, 0], atol=1e-9)
    # q and -q are the same rotation
    np.testing.assert_allclose(
        quat_to_axis_angle(np.array([0, 0, -s, -s])), quat_to_axis_angle(np.array([0, 0, s, s])), atol=1e-9
    )


def test_bad_task_and_camera_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"unknown task 'stack'.*lift, can, square"):
        make_env("stack")
    with pytest.raises(UserError, match="unknown camera 'side'"):
        make_env("lift", cameras=("side",))
    with pytest.raises(UserError, match="PickPlaceBread"):
        task_from_env_name("PickPlaceBread")
    assert env_args("can", (), 84)["env_name"] == "PickPlaceCan"


def test_frustum_test_on_known_spheres() -> None:
    # Camera at the origin looking along −z (identity axes), 90° vertical field of view, square image.
    centres = np.array([[0, 0, -5], [0, 0, 5], [20, 0, -5], [5.6, 0, -5], [0, 0, -200]], float)
    radii = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    out = outside_frustum(centres, radii, np.zeros(3), np.eye(3), 1.0, 1.0, 0.1, 100.0)
    # ahead: in; behind: out; far right: out; grazing the right plane (distance 0.42 < r): in; past zfar: out
    assert out.tolist() == [False, True, True, False, True]
    # the same sphere leaves a frustum twice as wide in x only when the aspect ratio halves
    narrow = outside_frustum(np.array([[8.0, 0, -5]]), np.ones(1), np.zeros(3), np.eye(3), 1.0, 1.0, 0.1, 100.0)
    wide = outside_frustum(np.array([[8.0, 0, -5]]), np.ones(1), np.zeros(3), np.eye(3), 1.0, 2.0, 0.1, 100.0)
    assert narrow[0] and not wide[0]


@pytest.mark.parametrize("task", ["lift", "square"])
def test_culling_meshes_out_of_view_leaves_every_pixel_unchanged(task: str) -> None:
    envs = [RobosuiteTask(task, cameras=("agentview", "wrist"), image_size=48, seed=0, cull=c) for c in (False, True)]
    try:
        assert envs[0].culler is None and envs[1].culler is not None
        obs = [env.reset(seed=2) for env in envs]
        rng = np.random.default_rng(0)
        culled = 0
        for _ in range(15):
            action = rng.uniform(-1, 1, ACTION_DIM)
            obs = [env.step(action)[0] for env in envs]
            for cam in ("agentview", "wrist"):
                np.testing.assert_array_equal(obs[0][cam], obs[1][cam])
            culled += envs[1].culler.culled_last  # the last frame of a step is the wrist camera's
        assert culled > 15 * envs[1].culler.meshes.size // 2  # the wrist camera sees under half of the meshes
    finally:
        for env in envs:
            env.close()
