"""robomimic HDF5: layout, round trip, replay from states, atomic + resumable generation, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from csil_diag.data.demos import DemoConfig, generate_demos
from csil_diag.data.replay import replay_demos
from csil_diag.data.robomimic import load_episode, open_demos, read_info, split_masks
from csil_diag.errors import UserError


def test_robomimic_layout(lift_demos: Path) -> None:
    with h5py.File(lift_demos, "r") as f:
        data = f["data"]
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "Lift" and env_args["type"] == 1
        assert env_args["env_kwargs"]["controller_configs"]["body_parts"]["right"]["type"] == "OSC_POSE"
        assert sorted(data.keys()) == ["demo_0", "demo_1", "demo_2"]
        total = 0
        for name in data:
            demo = data[name]
            t = demo.attrs["num_samples"]
            total += t
            assert demo["actions"].shape == (t, 7)
            assert demo["rewards"].shape == demo["dones"].shape == (t,)
            assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
            assert demo["rewards"][-1] == 1.0  # sparse reward: success on the last step
            assert demo["states"].shape[0] == t
            for group in ("obs", "next_obs"):
                obs = demo[group]
                for key, shape in {
                    "robot0_eef_pos": (3,),
                    "robot0_eef_quat": (4,),
                    "robot0_gripper_qpos": (2,),
                    "robot0_joint_pos": (7,),
                    "object": (10,),
                    "eef": (8,),
                    "joints": (9,),
                    "agentview_image": (32, 32, 3),
                    "robot0_eye_in_hand_image": (32, 32, 3),
                    "agentview": (32, 32, 3),
                    "wrist": (32, 32, 3),
                }.items():
                    assert obs[key].shape == (t, *shape), (group, key)
                # our image names are hard links to robomimic's datasets, not copies
                assert obs["agentview"].id == obs["agentview_image"].id
            np.testing.assert_array_equal(demo["obs"]["object"][1:], demo["next_obs"]["object"][:-1])
        assert data.attrs["total"] == total
        train = [x.decode() for x in f["mask/train"][()]]
        valid = [x.decode() for x in f["mask/valid"][()]]
        assert sorted(train + valid) == sorted(data.keys()) and valid and not set(train) & set(valid)


def test_read_info_and_load_episode(lift_demos: Path) -> None:
    info = read_info(lift_demos)
    assert info.demos == ("demo_0", "demo_1", "demo_2") and all(info.success)
    assert info.obs_keys["eef"] == ((8,), "float32") and info.obs_keys["agentview"] == ((32, 32, 3), "uint8")
    assert info.meta["generator"]["task"] == "lift" and info.meta["attempts"] >= 3
    ep = load_episode(h5py.File(lift_demos, "r"), "demo_1", keys=("joints", "object"))
    assert set(ep.obs) == {"joints", "object"} and len(ep) == info.lengths[1]
    assert np.all(np.abs(ep.actions) <= 1.0)


def test_replay_from_states_reproduces_success(lift_demos: Path) -> None:
    results = replay_demos(lift_demos)
    assert [r.replay_success for r in results] == [True, True, True]
    assert max(r.max_object_error for r in results) < 1e-3


def test_generation_is_deterministic_resumable_and_extendable(tmp_path: Path) -> None:
    config = DemoConfig(task="lift", n=2, seed=5)
    ref = tmp_path / "ref.hdf5"
    generate_demos(config, ref)

    # Interrupt after the first demo: no final file, a .partial that the same command resumes.
    out = tmp_path / "out.hdf5"

    def interrupt(have: int, attempts: int, steps: int) -> None:
        if have == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_demos(config, out, on_progress=interrupt)
    assert not out.exists() and (tmp_path / "out.hdf5.partial").exists()
    summary = generate_demos(config, out)
    assert summary.resumed_from == 1 and summary.demos == 2 and out.exists()
    assert not (tmp_path / "out.hdf5.partial").exists()
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        for name in ("demo_0", "demo_1"):
            np.testing.assert_array_equal(a["data"][name]["actions"][()], b["data"][name]["actions"][()])

    # Extending keeps what is there and appends.
    summary = generate_demos(DemoConfig(task="lift", n=3, seed=5), out)
    assert summary.new_demos == 1 and read_info(out).demos == ("demo_0", "demo_1", "demo_2")
    # Asking for fewer than present writes nothing new.
    assert generate_demos(DemoConfig(task="lift", n=2, seed=5), out).new_demos == 0

    with pytest.raises(UserError, match=r"other settings: --noise 0\.2 \(the run has 0\.0\)"):
        generate_demos(DemoConfig(task="lift", n=4, seed=5, noise=0.2), out)


def test_parallel_workers_give_the_same_dataset(tmp_path: Path) -> None:
    one, two = tmp_path / "one.hdf5", tmp_path / "two.hdf5"
    config = DemoConfig(task="lift", n=2, seed=11, noise=0.3)
    generate_demos(config, one, workers=1)
    generate_demos(config, two, workers=2)
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        assert a["data"].attrs["total"] == b["data"].attrs["total"]
        for name in a["data"]:
            np.testing.assert_array_equal(a["data"][name]["states"][()], b["data"][name]["states"][()])
    # byte for byte (no modification times): a dataset regenerated another day meets a run's sha256 fingerprint
    assert one.read_bytes() == two.read_bytes()


def test_split_masks() -> None:
    names = [f"demo_{i}" for i in range(20)]
    train, valid = split_masks(names, 0.1)
    assert valid == ["demo_9", "demo_19"] and len(train) == 18
    assert split_masks(names, 0.0) == (sorted(names, key=lambda n: int(n[5:])), [])


def test_malformed_files_are_user_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(UserError, match="not a readable HDF5"):
        read_info(junk)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=[1, 2])
    with pytest.raises(UserError, match="no 'data' group"):
        read_info(other)
    with h5py.File(other, "a") as f:
        f.create_group("data").attrs["env_args"] = "{"
    with pytest.raises(UserError, match="env_args is not valid JSON"):
        read_info(other)
    with pytest.raises(UserError, match="no such file"), open_demos(tmp_path / "missing.hdf5"):
        pass


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "csil_diag.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demos", "--task", "stack", "--out", "x.hdf5"), "unknown task 'stack'"),
        (("demos", "--task", "lift", "--cameras", "side", "--out", "x.hdf5"), "unknown camera 'side'"),
        (("demos", "--task", "lift", "--n", "1", "--out", "/proc/nope/x.hdf5"), "cannot"),
        (("demos", "info", "JUNK"), "not a readable HDF5"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "JUNK").write_text("junk")
    args = tuple(str(tmp_path / a) if a == "JUNK" else a for a in args)
    proc = subprocess.run([sys.executable, "-m", "csil_diag.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("x.hdf5*"))


def test_cli_info_prints_summary(lift_demos: Path) -> None:
    proc = _cli("demos", "info", str(lift_demos))
    assert proc.returncode == 0, proc.stderr
    assert "Lift" in proc.stdout and "agentview_image" in proc.stdout and "3/3" in proc.stdout
