"""A packaged pre-trained tower as π0's image encoder (``PaliGemma/img``): π0's images in, prefix tokens out.

``PaliGemma/img/tower`` holds the tower's own parameters (replaced by the packaged weights when a model is created,
:func:`pretrained_tower_params`), ``PaliGemma/img/head`` the projection to the LLM width, zero-initialised like
openpi's SigLIP head (a fresh model's image tokens are all zero; the projection still gets gradients).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from csil_diag.errors import UserError
from csil_diag.vla.towers import dinov2, efficientnet
from csil_diag.vla.towers.common import from_pi0_range, package_file, sha256_of

# name → (the tower module, its packaged weights and their sha256, the package file they are read from)
TOWERS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple[dict[str, Any], str]], tuple[str, str]]] = {
    "dinov2-s": (lambda: dinov2.Dinov2Tower(dinov2.Dinov2Config(), name="tower"), dinov2.load_dinov2, dinov2.SOURCE),
    "efficientnet-lite0": (
        lambda: efficientnet.EfficientNetLite0(name="tower"),
        efficientnet.load_efficientnet,
        (efficientnet.PACKAGE, efficientnet.WEIGHTS),
    ),
}


def load_tower_weights(tower: str) -> tuple[dict[str, Any], str]:
    """The tower's packaged weights (converted, checked, cached) and their sha256; a missing or damaged package is
    one line naming the fix."""
    return TOWERS[tower][1]()


def tower_checksum(tower: str) -> str:
    """sha256 of the packaged file the tower's weights come from (part of every model identity that uses them)."""
    return sha256_of(package_file(*TOWERS[tower][2]))


class PretrainedVision(nn.Module):
    """Images (B, S, S, 3) float in [-1, 1] → tokens (B, n, out_width) in the activation dtype: DINOv2's patch tokens
    (its CLS token dropped: π0's prefix holds patches only) or EfficientNet's last feature map, row by row."""

    tower: str
    out_width: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = from_pi0_range(jnp.asarray(images, jnp.float32))
        out = TOWERS[self.tower][0]()(x)  # the tower runs in float32, as it was trained
        tokens = out[:, 1:] if self.tower == "dinov2-s" else out.reshape(out.shape[0], -1, out.shape[-1])
        head = nn.Dense(self.out_width, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="head")
        return head(tokens.astype(self.dtype))


def pretrained_tower_params(tower: str, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """π0's ``params`` with ``PaliGemma/img/tower`` replaced by the packaged weights (every leaf's shape checked
    against the model's), and their sha256."""
    weights, checksum = load_tower_weights(tower)
    fresh = params["PaliGemma"]["img"]["tower"]
    weights = {k: v for k, v in weights.items() if k in fresh}  # e.g. EfficientNet's ImageNet classifier: unused
    want = jax.tree_util.tree_structure(fresh)
    got = jax.tree_util.tree_structure(weights)
    shapes_ok = want == got and all(
        jnp.shape(a) == jnp.shape(b) for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(weights), strict=True)
    )
    if not shapes_ok:
        raise UserError(f"the packaged {tower} weights do not fit the tower's parameters; reinstall csil-diag[vision]")
    weights = jax.tree.map(lambda w, f: jnp.asarray(w, f.dtype), weights, fresh)
    img = {**params["PaliGemma"]["img"], "tower": weights}
    return {**params, "PaliGemma": {**params["PaliGemma"], "img": img}}, checksum
