"""SigLIP vision tower as π0 uses it (big_vision ViT, ``pool_type="none"``, scanned encoder blocks).

image (B, S, S, 3) in [-1, 1] → patch-embedding conv (float32) + learned position embedding (float32) → cast
to the activation dtype → ``depth`` pre-LN blocks (LayerNorm → multi-head self-attention → residual;
LayerNorm → Dense-gelu-Dense → residual) → final LayerNorm → ``head`` Dense to the LLM width:
(B, (S/p)², llm_width). Built from flax's own LayerNorm / MultiHeadDotProductAttention / Dense / Conv, named
as in openpi's checkpoints (``Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel``, …).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.vla.config import SiglipConfig


class MlpBlock(nn.Module):
    """Dense(mlp_dim) → gelu (tanh approximation) → Dense(width)."""

    mlp_dim: int
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        inits = {"kernel_init": nn.initializers.xavier_uniform(), "bias_init": nn.initializers.normal(stddev=1e-6)}
        y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype, name="Dense_0", **inits)(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="Dense_1", **inits)(y)


class EncoderBlock(nn.Module):
    """One pre-LN transformer block; carry-only signature so that ``nn.scan`` can stack it."""

    config: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array, _: None = None) -> tuple[jax.Array, None]:
        y = nn.LayerNorm(dtype=self.dtype, name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.config.num_heads,
            kernel_init=nn.initializers.xavier_uniform(),
            dtype=self.dtype,
            name="MultiHeadDotProductAttention_0",
        )(y, y)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name="LayerNorm_1")(x)
        return x + MlpBlock(self.config.mlp_dim, self.dtype, name="MlpBlock_0")(y), None


class Encoder(nn.Module):
    config: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        blocks = nn.scan(
            EncoderBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.config.depth,
        )(self.config, self.dtype, name="encoderblock")
        x, _ = blocks(x, None)
        return nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)


class SigLIP(nn.Module):
    """Images (B, S, S, 3) float in [-1, 1] → tokens (B, (S/p)², out_width) in the activation dtype."""

    config: SiglipConfig
    out_width: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        # Patch extraction and position embedding stay in float32 (as in openpi), then cast.
        x = nn.Conv(c.width, c.patch_size, strides=c.patch_size, padding="VALID", dtype=jnp.float32, name="embedding")(
            jnp.asarray(images, jnp.float32)
        )
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
        pos = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(d)), (1, h * w, d), jnp.float32)
        x = Encoder(c, self.dtype, name="Transformer")((x + pos).astype(self.dtype))
        # openpi zero-initialises the head (so a fresh model's image tokens are all zero).
        return nn.Dense(self.out_width, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="head")(x)
