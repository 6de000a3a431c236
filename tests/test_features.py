"""The --input spec: parsing, slicing, sources, errors; normalisation with a std floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from csil_diag.errors import UserError
from csil_diag.features.dataset import load_demo_features
from csil_diag.features.normalize import Normalizer
from csil_diag.features.sources import featurize, required_keys
from csil_diag.features.spec import InputSpec, SourceSlice


def _obs(n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    quat = rng.standard_normal((n, 4))
    return {
        "robot0_eef_pos": rng.standard_normal((n, 3)),
        "robot0_eef_quat": quat / np.linalg.norm(quat, axis=1, keepdims=True),
        "robot0_gripper_qpos": rng.standard_normal((n, 2)),
        "robot0_joint_pos": rng.standard_normal((n, 7)),
        "object": rng.standard_normal((n, 10)),
    }


def test_parse_and_widths() -> None:
    spec = InputSpec.parse("joints+object[3:7]+eef[:3]")
    assert spec.sources == (SourceSlice("joints"), SourceSlice("object", 3, 7), SourceSlice("eef", None, 3))
    assert str(spec) == "joints+object[3:7]+eef[:3]"
    obs = _obs()
    x = featurize(spec, obs)
    assert x.shape == (4, 9 + 4 + 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :7], obs["robot0_joint_pos"], rtol=1e-6)
    np.testing.assert_allclose(x[:, 9:13], obs["object"][:, 3:7], rtol=1e-6)
    np.testing.assert_allclose(x[:, 13:], obs["robot0_eef_pos"], rtol=1e-6)
    assert featurize(InputSpec.parse("object[-2:]"), obs).shape == (4, 2)
    assert set(required_keys(spec)) == {
        "robot0_joint_pos",
        "robot0_gripper_qpos",
        "object",
        "robot0_eef_pos",
        "robot0_eef_quat",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty --input"),
        ("joints+", "cannot parse ''"),
        ("joints[::2]", "cannot parse"),
        ("wrist_cam", "unknown --input source 'wrist_cam'; available: eef, joints, object, pi0"),
        ("joints+joints", "appears twice"),
    ],
)
def test_spec_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        spec = InputSpec.parse(text)
        required_keys(spec)


@pytest.mark.parametrize("text", ["object[:11]", "object[10:]", "object[5:3]", "joints[-10:]"])
def test_slices_past_the_width_are_errors(text: str) -> None:
    with pytest.raises(UserError, match="outside"):
        featurize(InputSpec.parse(text), _obs())


def test_normalizer_floors_tiny_stds() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(2.0, 3.0, 1000), rng.normal(0.0, 5e-4, 1000)], 1).astype(np.float32)
    norm = Normalizer.fit(x, floor=0.01)
    assert norm.std[1] == pytest.approx(0.01) and norm.raw_std[1] < 1e-3
    z = norm(x)
    assert abs(z[:, 0].mean()) < 1e-5 and abs(z[:, 0].std() - 1) < 1e-3
    assert np.abs(z[:, 1]).max() < 0.5  # a tiny wobble stays tiny
    again = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again(x), z)
    with pytest.raises(UserError, match="NaN"):
        Normalizer.fit(np.full((3, 2), np.nan, np.float32), 0.01)


def test_demo_features_from_hdf5(lift_demos: Path) -> None:
    train = load_demo_features(lift_demos, InputSpec.parse("joints+object"), "train")
    valid = load_demo_features(lift_demos, InputSpec.parse("joints+object"), "valid")
    assert train.x.shape[1] == 19 and train.actions.shape == (len(train.x), 7)
    assert len(train.demos) == 2 and len(valid.demos) == 1 and not set(train.demos) & set(valid.demos)
    assert set(np.unique(train.episode)) == {0, 1}


def test_index_set_selection_is_exact_and_checked() -> None:
    spec = InputSpec.parse("pi0{5,0,2}+joints")
    assert str(spec) == "pi0{5,0,2}+joints"  # recorded exactly, in the order given
    values = np.arange(24, dtype=np.float32).reshape(4, 6)
    obs = {"robot0_joint_pos": np.zeros((4, 7)), "robot0_gripper_qpos": np.zeros((4, 2))}
    x = featurize(spec, obs, {"pi0": values})
    assert x.shape == (4, 3 + 9)
    np.testing.assert_array_equal(x[:, :3], values[:, [5, 0, 2]])
    with pytest.raises(UserError, match="selects column 5, outside pi0's width 4"):
        featurize(spec, obs, {"pi0": values[:, :4]})
    with pytest.raises(UserError, match="names a column twice"):
        InputSpec.parse("pi0{1,1}")
