"""The three-piece assembly task: placements, the success check on constructed states, the fit's tightness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csil_diag.envs import assembly as geometry
from csil_diag.envs.tasks import TASKS, make_env


@pytest.fixture(scope="module")
def env():
    made = make_env("assembly", seed=0)
    yield made
    made.close()


def _poses(env) -> np.ndarray:
    e = env.env
    return np.concatenate(
        [
            e.sim.data.body_xpos[e.piece_1_body_id],
            e.sim.data.body_xquat[e.piece_1_body_id],
            e.sim.data.body_xpos[e.piece_2_body_id],
            e.sim.data.body_xquat[e.piece_2_body_id],
        ]
    )


def _place(env, piece: int, xy, bottom: float, yaw: float) -> None:
    """Put a piece at (x, y) with its bottom at ``bottom`` and the given yaw, at rest."""
    e = env.env
    obj = e.piece_1 if piece == 1 else e.piece_2
    height = geometry.PIECE1_HEIGHT if piece == 1 else geometry.PIECE2_HEIGHT
    quat = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])  # MuJoCo's (w, x, y, z)
    e.sim.data.set_joint_qpos(obj.joints[0], np.concatenate([[xy[0], xy[1], bottom + height / 2], quat]))
    e.sim.data.set_joint_qvel(obj.joints[0], np.zeros(6))
    e.sim.forward()


def _settle(env, steps: int = 150) -> None:
    for _ in range(steps):
        env.env.sim.step()


def test_task_is_registered_with_the_thesis_horizon_and_prompt():
    spec = TASKS["assembly"]
    assert spec.horizon == 800
    assert spec.prompt == "assemble the three pieces"


def test_placements_reproducible_from_the_seed_and_clear_of_the_base(env):
    env.reset(seed=7)
    first = _poses(env)
    env.reset(seed=8)
    other = _poses(env)
    env.reset(seed=7)
    np.testing.assert_array_equal(first, _poses(env))
    assert not np.allclose(first, other)
    e = env.env
    for seed in range(10):
        obs = env.reset(seed=seed)
        assert obs["object"].shape == (30,)  # pos, quat, to-eef pos of base, piece 1, piece 2
        base = e.sim.data.body_xpos[e.base_body_id][:2]
        for body in (e.piece_1_body_id, e.piece_2_body_id):
            # outside the base's ring: nothing starts on or in it
            assert np.linalg.norm(e.sim.data.body_xpos[body][:2] - base) > geometry.BASE_OUTER / 2
        assert not e.piece_1_seated() and not e.piece_2_seated() and not env.is_success()


def test_success_only_when_both_pieces_are_seated_in_order(env):
    e = env.env
    env.reset(seed=0)
    table = e.table_offset[2]
    centre = e.sim.data.body_xpos[e.base_body_id][:2].copy()
    far = centre + np.array([-0.25, 0.2])
    # piece 1 seated, piece 2 elsewhere on the table: the first stage only
    _place(env, 1, centre, table, 0.3)
    _place(env, 2, far, table, 0.0)
    _settle(env)
    assert e.piece_1_seated() and not e.piece_2_seated() and not env.is_success()
    # piece 1 seated at a yaw ≡ 0.3 (mod 90°) fits too, but piece 2 must follow its ridge modulo 180°
    _place(env, 2, centre, table + geometry.BASE_HEIGHT + 0.002, 0.3 + np.pi)
    _settle(env)
    assert e.piece_1_seated() and e.piece_2_seated() and env.is_success()
    # piece 2 turned 90° cannot go down over the ridge: it rests on the ridge's top, not seated
    _place(env, 2, centre, table + geometry.PIECE1_HEIGHT + 0.002, 0.3 + np.pi / 2)
    _settle(env)
    assert e.piece_bottom(2) > table + geometry.PIECE1_HEIGHT - 0.003
    assert not e.piece_2_seated() and not env.is_success()
    # piece 2 "seated" without piece 1 under it (piece 1 elsewhere): no success
    _place(env, 1, far, table, 0.0)
    _place(env, 2, centre, table + geometry.BASE_HEIGHT + 0.002, 0.0)
    _settle(env)
    assert not e.piece_1_seated() and not env.is_success()


def test_piece_1_does_not_fit_the_hole_turned_45_degrees(env):
    """The hole is tight: a piece off by 45° stays on the rim (so the expert must align the yaw)."""
    e = env.env
    env.reset(seed=0)
    table = e.table_offset[2]
    centre = e.sim.data.body_xpos[e.base_body_id][:2].copy()
    _place(env, 1, centre, table + geometry.BASE_HEIGHT + 0.002, np.pi / 4)
    _settle(env)
    assert e.piece_bottom(1) > table + geometry.BASE_HEIGHT - 0.003
    assert not e.piece_1_seated()


@pytest.mark.slow
def test_demos_replay_and_the_vla_dataset(tmp_path):
    """The expert's demos in robomimic's layout, replayed from their states to the same success, and read as a π0
    training set with the task's prompt (what multi-task pre-training takes)."""
    import h5py

    from csil_diag.data.demos import DemoConfig, generate_demos
    from csil_diag.data.replay import replay_demos
    from csil_diag.data.robomimic import read_info
    from csil_diag.envs.tasks import task_from_env_name
    from csil_diag.features.dataset import check_demos_for_task
    from csil_diag.vla import adapter
    from csil_diag.vla.dataset import DemoFile, load_dataset

    out = tmp_path / "assembly.hdf5"
    config = DemoConfig(task="assembly", n=2, seed=0, valid_fraction=0.5, cameras=("agentview", "wrist"), image_size=32)
    generate_demos(config, out, workers=1)
    info = read_info(out)
    assert info.meta["generator"]["task"] == "assembly" and all(info.success)
    assert info.obs_keys["object"][0] == (30,) and info.obs_keys["agentview"][0] == (32, 32, 3)
    with h5py.File(out, "r") as f:
        env_name = json.loads(f["data"].attrs["env_args"])["env_name"]
    assert task_from_env_name(env_name) == "assembly"
    check_demos_for_task(out, "assembly")
    vla_data = load_dataset(adapter.TINY, (DemoFile("assembly", out),))
    assert vla_data.prompts == ("assemble the three pieces",) and len(vla_data.state) == info.lengths[0]
    results = replay_demos(out)
    assert [r.replay_success for r in results] == [True, True]
    assert max(r.max_object_error for r in results) < 1e-3
