"""Gemma as a mixture of experts that share attention layer by layer (openpi's π0 transformer).

Expert 0 is the PaliGemma LLM (prefix: image + prompt tokens), expert 1 the action expert (suffix: state and
action tokens). Each expert has its own norms, q/kv/out projections and MLP (expert 1's names carry ``_1``),
but attention runs over the concatenation of both experts' tokens. Layers are scanned: every layer weight has
a leading depth axis. Parameter names and shapes follow openpi's checkpoints exactly.

Numerics follow openpi: RMSNorm in float32 with ``(1 + scale)``; RoPE in float32 on (first half, second half)
pairs, cast back; queries scaled by head_dim^-0.5; attention logits in float32, masked with -2.3819763e38;
GeGLU MLP with tanh-approximate gelu. Weights are cast to the activation dtype at use.

Axis letters in shapes: B batch, T query tokens, S key tokens, N query heads, K kv heads, G = N / K,
H head dim, D width, L layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from csil_diag.vla.config import GemmaConfig, LoRAConfig
from csil_diag.vla.lora import LORA_INIT, lora_equations, lora_shapes

BIG_NEG = -2.3819763e38  # Gemma's masking constant (a finite "-inf" that stays finite in float32)

Array = jax.Array
KVCache = tuple[Array, Array]  # k, v: (L, B, S, K, H), k after RoPE


def expert_name(name: str, expert: int) -> str:
    """openpi names expert 0's weights plainly and expert i's with an ``_i`` suffix."""
    return name if expert == 0 else f"{name}_{expert}"


def apply_rope(x: Array, positions: Array, max_wavelength: float = 10_000.0) -> Array:
    """Rotary embedding: x (B, T, N, H), positions (B, T) int → (B, T, N, H) in x's dtype.

    Feature i of the first half rotates with feature i of the second half at frequency
    max_wavelength^(-2i/H); the rotation is computed in float32.
    """
    half = x.shape[-1] // 2
    timescale = max_wavelength ** ((2.0 / x.shape[-1]) * jnp.arange(half, dtype=jnp.float32))
    radians = (positions[..., None] / timescale)[..., None, :]  # (B, T, 1, H/2)
    sin, cos = jnp.sin(radians), jnp.cos(radians)
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1).astype(x.dtype)


class RMSNorm(nn.Module):
    """x / rms(x) · (1 + scale), computed in float32, returned in x's dtype."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        normed = x * jnp.reciprocal(jnp.sqrt(var + 1e-6))
        return (normed * (1 + scale)).astype(x.dtype)


class Embedder(nn.Module):
    """Token embedding table (vocab, D); embeddings are scaled by sqrt(D)."""

    vocab_size: int
    width: int

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        table = self.param("input_embedding", nn.initializers.normal(), (self.vocab_size, self.width))
        x = table[tokens]
        return x * jnp.sqrt(self.width).astype(x.dtype)


class Einsum(nn.Module):
    """``einsum(eqn, x, w)`` with an optional LoRA delta scaled by alpha / rank."""

    shape: tuple[int, ...]
    init: nn.initializers.Initializer
    lora: LoRAConfig | None = None

    @nn.compact
    def __call__(self, eqn: str, x: Array) -> Array:
        w = self.param("w", self.init, self.shape)
        y = jnp.einsum(eqn, x, w.astype(x.dtype))
        if self.lora is not None:
            shape_a, shape_b = lora_shapes(self.shape, self.lora.rank)
            a = self.param("lora_a", LORA_INIT, shape_a)
            b = self.param("lora_b", LORA_INIT, shape_b)
            eqn_a, eqn_b = lora_equations(eqn)
            y = y + jnp.einsum(eqn_b, jnp.einsum(eqn_a, x, a.astype(x.dtype)), b.astype(x.dtype)) * self.lora.scaling
        return y


def _lecun(in_axis: int | tuple[int, ...] = -2, batch_axis: tuple[int, ...] = ()) -> nn.initializers.Initializer:
    return nn.initializers.lecun_normal(in_axis=in_axis, out_axis=-1, batch_axis=batch_axis)


class FeedForward(nn.Module):
    """GeGLU: (gelu(x W_gate) ⊙ x W_up) W_down; ``gating_einsum`` (2, D, F), ``linear`` (F, D)."""

    width: int
    hidden: int
    lora: LoRAConfig | None = None

    def _dot(self, x: Array, w: Array, adapter: tuple[Array, Array] | None) -> Array:
        y = jnp.dot(x, w.astype(x.dtype))
        if adapter is not None:  # openpi adds the MLP adapter without the alpha / rank factor
            y = y + jnp.dot(jnp.dot(x, adapter[0].astype(x.dtype)), adapter[1].astype(x.dtype))
        return y

    @nn.compact
    def __call__(self, x: Array) -> Array:
        gating = self.param("gating_einsum", _lecun(batch_axis=(0,)), (2, self.width, self.hidden))
        linear = self.param("linear", _lecun(), (self.hidden, self.width))
        gate_lora = up_lora = down_lora = None
        if self.lora is not None:
            r = self.lora.rank
            ga = self.param("gating_einsum_lora_a", LORA_INIT, (2, self.width, r))
            gb = self.param("gating_einsum_lora_b", LORA_INIT, (2, r, self.hidden))
            gate_lora, up_lora = (ga[0], gb[0]), (ga[1], gb[1])
            down_lora = (
                self.param("linear_lora_a", LORA_INIT, (self.hidden, r)),
                self.param("linear_lora_b", LORA_INIT, (r, self.width)),
            )
        gate = nn.gelu(self._dot(x, gating[0], gate_lora))
        return self._dot(gate * self._dot(x, gating[1], up_lora), linear, down_lora)


class Attention(nn.Module):
    """Joint attention over all experts' tokens (concatenated along T in expert order)."""

    configs: tuple[GemmaConfig, ...]

    def _qkv(self, x: Array, config: GemmaConfig, expert: int) -> tuple[Array, Array, Array]:
        """x (B, T, D) → q (B, T, N, H), k and v (B, T, K, H)."""
        n, k, d, h = config.num_heads, config.num_kv_heads, config.width, config.head_dim
        lora = config.lora("attn")
        if n == k:  # openpi fuses q, k, v into one weight when there is no grouping
            qkv = Einsum((3, n, d, h), _lecun(batch_axis=(0, 1)), lora, name=expert_name("qkv_einsum", expert))
            q, key, value = qkv("BSD,CKDH->CBSKH", x)
            return q, key, value
        q = Einsum((n, d, h), _lecun(batch_axis=(0,)), lora, name=expert_name("q_einsum", expert))("BTD,NDH->BTNH", x)
        kv = Einsum((2, k, d, h), _lecun(batch_axis=(0, 1)), lora, name=expert_name("kv_einsum", expert))
        key, value = kv("BSD,CKDH->CBSKH", x)
        return q, key, value

    @nn.compact
    def __call__(
        self, xs: Sequence[Array | None], positions: Array, mask: Array, kv_cache: KVCache | None
    ) -> tuple[list[Array | None], KVCache]:
        """xs: per expert (B, T_i, D_i) or None; positions (B, T); mask (B, T, S) with S = cached + T.

        Returns per-expert outputs and this layer's (k, v), each (B, S, K, H) including the cache.
        """
        head = self.configs[0]
        experts = enumerate(zip(xs, self.configs, strict=True))
        parts = [self._qkv(x, config, i) for i, (x, config) in experts if x is not None]
        q, k, v = (jnp.concatenate(p, axis=1) for p in zip(*parts, strict=True))
        dtype = q.dtype
        q = apply_rope(q, positions) * head.head_dim**-0.5
        k = apply_rope(k, positions)
        if kv_cache is not None:
            k = jnp.concatenate([kv_cache[0], k], axis=1)
            v = jnp.concatenate([kv_cache[1], v], axis=1)

        b, t, n, h = q.shape
        q = q.reshape(b, t, head.num_kv_heads, n // head.num_kv_heads, h)  # query head = kv head · G + g
        logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
        logits = jnp.where(mask[:, None, None, :, :], logits, BIG_NEG)
        probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
        encoded = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(b, t, n, h)

        outs: list[Array | None] = []
        start = 0
        for i, (x, config) in enumerate(zip(xs, self.configs, strict=True)):
            if x is None:
                outs.append(None)
                continue
            proj = Einsum(
                (config.num_heads, config.head_dim, config.width),
                _lecun(in_axis=(-3, -2)),
                config.lora("attn"),
                name=expert_name("attn_vec_einsum", i),
            )
            outs.append(proj("BTNH,NHD->BTD", encoded[:, start : start + x.shape[1]]))
            start += x.shape[1]
        return outs, (k, v)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)), per expert."""

    configs: tuple[GemmaConfig, ...]

    @nn.compact
    def __call__(
        self, xs: list[Array | None], kv_cache: KVCache | None, positions: Array, mask: Array
    ) -> tuple[list[Array | None], KVCache]:
        norms = [RMSNorm(name=expert_name("pre_attention_norm", i)) for i in range(len(xs))]
        normed = [None if x is None else norm(x) for norm, x in zip(norms, xs, strict=True)]
        attn, kv = Attention(self.configs, name="attn")(normed, positions, mask, kv_cache)
        xs = [None if x is None else x + y for x, y in zip(xs, attn, strict=True)]
        out: list[Array | None] = []
        for i, (x, config) in enumerate(zip(xs, self.configs, strict=True)):
            if x is None:
                out.append(None)
                continue
            mlp = FeedForward(config.width, config.mlp_dim, config.lora("ffn"), name=expert_name("mlp", i))
            out.append(x + mlp(RMSNorm(name=expert_name("pre_ffw_norm", i))(x)))
        return out, kv


class Gemma(nn.Module):
    """The experts' transformer. ``embed`` serves expert 0 only (the action expert has no vocabulary)."""

    configs: tuple[GemmaConfig, ...]
    vocab_size: int
    dtype: str = "float32"

    def setup(self) -> None:
        self.embedder = Embedder(self.vocab_size, self.configs[0].width)
        self.layers = nn.scan(
            Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast),  # kv_cache scanned per layer; positions, mask shared
            length=self.configs[0].depth,
        )(self.configs)
        self.final_norms = [RMSNorm(name=expert_name("final_norm", i)) for i in range(len(self.configs))]

    def embed(self, tokens: Array) -> Array:
        """tokens (B, T) int → (B, T, D_0) in the activation dtype."""
        return self.embedder(tokens).astype(self.dtype)

    def __call__(
        self, xs: Sequence[Array | None], positions: Array, mask: Array, kv_cache: KVCache | None = None
    ) -> tuple[list[Array | None], KVCache]:
        """xs: per expert (B, T_i, D_i) or None; positions (B, ΣT_i); mask (B, ΣT_i, S) bool.

        Returns per-expert final-normed outputs and the KV cache (L, B, S, K, H) of this pass (cache included).
        """
        xs = [None if x is None else x.astype(self.dtype) for x in xs]
        xs, kv_cache = self.layers(xs, kv_cache, positions, mask)
        return [None if x is None else norm(x) for norm, x in zip(self.final_norms, xs, strict=True)], kv_cache
