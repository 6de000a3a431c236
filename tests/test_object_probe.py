"""The object-sensitivity probe: perturbations move exactly the intended body; sensitivity sees what is encoded."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from csil_diag.diag import object_probe as op
from csil_diag.envs import perturb
from csil_diag.envs.tasks import make_env


@pytest.fixture(scope="module")
def start_state(lift_demos: Path) -> np.ndarray:
    with h5py.File(lift_demos, "r") as f:
        return f["data/demo_0/states"][0]


def test_object_moves_and_nothing_else(start_state: np.ndarray) -> None:
    with make_env("lift", seed=0) as env:
        before = env.reset_to_state(start_state)
        pos, quat = perturb.object_pose(env)
        eef = perturb.eef_position(env)
        perturb.move_object(env, np.array([0.02, -0.01, 0.0]), yaw=np.pi / 6)
        after = perturb.observe(env)
        new_pos, new_quat = perturb.object_pose(env)
        np.testing.assert_allclose(new_pos - pos, [0.02, -0.01, 0.0], atol=1e-12)
        # a 30° turn about z: the relative rotation's angle is 30°
        rel = np.zeros(4)
        import mujoco

        conj = quat * np.array([1, -1, -1, -1])
        mujoco.mju_mulQuat(rel, new_quat, conj)
        assert np.degrees(2 * np.arccos(min(1.0, abs(rel[0])))) == pytest.approx(30.0, abs=1e-6)
        np.testing.assert_array_equal(perturb.eef_position(env), eef)
        np.testing.assert_array_equal(after["robot0_joint_pos"], before["robot0_joint_pos"])
        np.testing.assert_allclose(after["object"][:3] - before["object"][:3], [0.02, -0.01, 0.0], atol=1e-9)


def test_robot_moves_and_the_object_stays(start_state: np.ndarray) -> None:
    with make_env("lift", seed=0) as env:
        before = env.reset_to_state(start_state)
        pos, _ = perturb.object_pose(env)
        achieved = perturb.move_eef(env, np.array([0.0, 0.05, 0.0]))
        after = perturb.observe(env)
        np.testing.assert_allclose(achieved, [0.0, 0.05, 0.0], atol=1e-4)
        np.testing.assert_allclose(after["robot0_eef_pos"] - before["robot0_eef_pos"], achieved, atol=1e-9)
        np.testing.assert_array_equal(perturb.object_pose(env)[0], pos)
        np.testing.assert_array_equal(after["robot0_gripper_qpos"], before["robot0_gripper_qpos"])


def test_sensitivity_sees_what_an_embedding_encodes(lift_demos: Path) -> None:
    states = op.collect_states("lift", lift_demos, (), 32, n_starts=3, reference_per_demo=3)
    assert len(states.base) == 3 and all(len(v) == 3 for v in states.moved.values()) and len(states.reference) == 9

    def blind(obs, ids):  # ignores the object entirely
        return np.stack([o["robot0_eef_pos"] for o in obs])

    def sighted(obs, ids):  # the object's position and the robot's
        return np.stack([np.concatenate([o["object"][:3], o["robot0_eef_pos"]]) for o in obs])

    table = op.probe_table(states, {"blind": blind, "sighted": sighted}).set_index(["embedding", "perturbation"])
    for p in op.PERTURBATIONS:
        if p.body == "object":
            assert table.loc[("blind", p.label), "sensitivity"] == 0.0
            if p.kind == "shift":
                assert table.loc[("sighted", p.label), "sensitivity"] > 0.0
        else:
            assert table.loc[("blind", p.label), "sensitivity"] > 0.0
    # sensitivity grows with the shift
    s = [table.loc[("sighted", f"object shift {c} cm"), "sensitivity"] for c in (1, 2, 5)]
    assert s[0] < s[1] < s[2]
    ratios = op.ratio_summary(table.reset_index())
    assert (ratios[ratios.embedding == "blind"].object_over_robot == 0.0).all()


def test_probe_object_cli_with_a_small_pi0(lift_demos: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from test_vla_use import _save_model

    from csil_diag.cli import main
    from csil_diag.report.pdf import build_report

    model = _save_model(tmp_path / "pi0", 0)
    out = tmp_path / "probe"
    args = ["probe", "object", "--task", "lift", "--demos", str(lift_demos), "--model", str(model), "--n", "2", "--out"]
    monkeypatch.setattr(sys, "argv", ["csil-diag", *args, str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    import pandas as pd

    table = pd.read_parquet(out / "object_probe.parquet")
    assert set(table.embedding) == {"π0 state", "π0 actions", "π0 prefix", "joints+object"}
    assert table.sensitivity.notna().all() and (table.sensitivity >= 0).all()
    lowdim = table[table.embedding == "joints+object"].set_index("perturbation")
    assert lowdim.loc["object shift 5 cm", "sensitivity"] > lowdim.loc["object shift 1 cm", "sensitivity"] > 0
    summary = build_report([out], tmp_path / "r.pdf")
    assert [p.name for p in summary.pngs] == ["r_object_probe.png"]
