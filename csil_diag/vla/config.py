"""Frozen π0 configs and named presets (openpi's variants), plus JSON (de)serialisation.

One config describes the whole model: the PaliGemma LLM (expert 0), the action expert (expert 1), the
SigLIP vision tower, and the action / prompt sizes. Nothing here is specialised to a fixture: a fixture's
``meta.json`` spec is read by :func:`from_fixture_meta`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from csil_diag.errors import UserError

DTYPES = ("float32", "bfloat16")
OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
LORA_TARGETS = ("attn", "ffn")
# The image encoder: the SigLIP-style tower trained with the model (``siglip``: openpi's layout), or a tower
# pre-trained elsewhere, read from an installed package (csil_diag/vla/towers) and projected to the prefix width.
VISION_TOWERS = ("siglip", "dinov2-s", "efficientnet-lite0")


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapter on one weight; openpi scales the attention adapters by alpha / rank."""

    rank: int
    alpha: float

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma expert. ``lora_rank`` 0 means no LoRA; ``lora_on`` ⊆ {"attn", "ffn"}."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    lora_rank: int = 0
    lora_alpha: float = 1.0
    lora_on: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim) < 1:
            raise UserError(f"Gemma sizes must be positive: {self}")
        if self.num_heads % self.num_kv_heads:
            raise UserError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise UserError(f"head_dim must be even for RoPE (got {self.head_dim})")
        if self.lora_rank < 0 or not set(self.lora_on) <= set(LORA_TARGETS):
            raise UserError(f"LoRA needs rank >= 0 and targets in {LORA_TARGETS}, got {self.lora_rank} {self.lora_on}")

    def lora(self, target: str) -> LoRAConfig | None:
        """The adapter for ``target`` ("attn" or "ffn"), or None."""
        if self.lora_rank and target in self.lora_on:
            return LoRAConfig(self.lora_rank, self.lora_alpha)
        return None


@dataclass(frozen=True)
class SiglipConfig:
    """SigLIP ViT (big_vision layout, learned position embedding, no pooling)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: tuple[int, int] = (14, 14)
    image_size: int = 224

    def __post_init__(self) -> None:
        if self.width % self.num_heads:
            raise UserError(f"SigLIP width ({self.width}) must be a multiple of num_heads ({self.num_heads})")
        if any(self.image_size % p for p in self.patch_size):
            raise UserError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size[0]) * (self.image_size // self.patch_size[1])


@dataclass(frozen=True)
class Pi0Config:
    """π0 (not π0-FAST, not π0.5): PaliGemma prefix + action expert with a state token and an action-time MLP."""

    llm: GemmaConfig
    expert: GemmaConfig
    siglip: SiglipConfig
    vocab_size: int = 257_152
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 48
    dtype: str = "bfloat16"  # activation dtype (openpi Pi0Config.dtype); params keep their own dtype
    cameras: tuple[str, ...] = OPENPI_CAMERAS
    vision: str = "siglip"  # one of VISION_TOWERS; every tower reads siglip.image_size-px images

    def __post_init__(self) -> None:
        if self.vision not in VISION_TOWERS:
            raise UserError(f"vision tower must be one of {', '.join(VISION_TOWERS)} (got {self.vision!r})")
        if self.vision == "dinov2-s" and self.siglip.image_size % 14:
            raise UserError(
                f"dinov2-s reads 14-px patches: image_size must be a multiple of 14 ({self.siglip.image_size})"
            )
        if self.dtype not in DTYPES:
            raise UserError(f"dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r})")
        shared = ("depth", "num_heads", "num_kv_heads", "head_dim")
        differ = [name for name in shared if getattr(self.llm, name) != getattr(self.expert, name)]
        if differ:
            raise UserError(f"the LLM and the action expert must share {', '.join(differ)} (they attend jointly)")
        if not self.cameras:
            raise UserError("π0 needs at least one camera")
        if min(self.action_dim, self.action_horizon, self.max_token_len, self.vocab_size) < 1:
            raise UserError("action_dim, action_horizon, max_token_len and vocab_size must be positive")

    @property
    def image_tokens(self) -> int:
        """Tokens per camera: the tower's patches (DINOv2 14-px patches; EfficientNet's stride-32 'same' map)."""
        s = self.siglip.image_size
        if self.vision == "dinov2-s":
            return (s // 14) ** 2
        if self.vision == "efficientnet-lite0":
            return ((s + 31) // 32) ** 2
        return self.siglip.num_patches

    @property
    def prefix_len(self) -> int:
        return len(self.cameras) * self.image_tokens + self.max_token_len

    @property
    def suffix_len(self) -> int:
        return 1 + self.action_horizon  # state token + action tokens

    def with_dtype(self, dtype: str) -> Pi0Config:
        return replace(self, dtype=dtype)


# ------------------------------------------------------------------------------------------ presets
GEMMA_2B = GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA_300M = GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA_2B_LORA = replace(GEMMA_2B, lora_rank=16, lora_alpha=16.0)
GEMMA_300M_LORA = replace(GEMMA_300M, lora_rank=32, lora_alpha=32.0)
SO400M_14 = SiglipConfig(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=(14, 14))

PRESETS: dict[str, Pi0Config] = {
    "pi0_base": Pi0Config(llm=GEMMA_2B, expert=GEMMA_300M, siglip=SO400M_14),
    "pi0_lora": Pi0Config(llm=GEMMA_2B_LORA, expert=GEMMA_300M_LORA, siglip=SO400M_14),
    # Trains on a CPU: fixture-a sizes with a byte-level vocabulary and 112-px images (64 tokens / camera).
    "pi0_tiny": Pi0Config(
        llm=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=16),
        expert=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
        siglip=SiglipConfig(width=64, depth=2, mlp_dim=128, num_heads=2, patch_size=(14, 14), image_size=112),
        vocab_size=259,
        action_dim=32,
        action_horizon=4,
        max_token_len=16,
        dtype="float32",
    ),
}


def preset(name: str, **overrides: Any) -> Pi0Config:
    """A named preset, optionally with top-level fields replaced (e.g. ``dtype="float32"``)."""
    if name not in PRESETS:
        raise UserError(f"unknown π0 preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# ------------------------------------------------------------------------------------------ (de)serialisation
def to_dict(config: Pi0Config) -> dict[str, Any]:
    """The config as JSON-able data; the default SigLIP tower is left out, so checkpoints written before towers could
    be chosen keep their config and fingerprint."""
    data = asdict(config)
    if data["vision"] == "siglip":
        del data["vision"]
    return data


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UserError(f"unknown {where} field(s): {', '.join(sorted(unknown))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def from_dict(data: dict[str, Any]) -> Pi0Config:
    """Inverse of :func:`to_dict`; unknown keys are errors."""
    data = dict(data)
    try:
        parts = {
            "llm": _build(GemmaConfig, data.pop("llm"), "llm"),
            "expert": _build(GemmaConfig, data.pop("expert"), "expert"),
            "siglip": _build(SiglipConfig, data.pop("siglip"), "siglip"),
        }
    except KeyError as exc:
        raise UserError(f"π0 config lacks the {exc.args[0]!r} section") from None
    return _build(Pi0Config, {**data, **parts}, "Pi0Config")


def _gemma_from_spec(spec: dict[str, Any], where: str) -> GemmaConfig:
    """openpi gemma.Config fields, with LoRA either flat or as openpi's ``lora_configs`` {attn, ffn}."""
    spec = dict(spec)
    lora = spec.pop("lora_configs", None) or {}
    if lora:
        ranks = {(v["rank"], float(v.get("alpha", 1.0))) for v in lora.values()}
        if len(ranks) != 1:
            raise UserError(f"{where}: LoRA with different rank/alpha on attn and ffn is not supported")
        (rank, alpha) = ranks.pop()
        spec.update(lora_rank=rank, lora_alpha=alpha, lora_on=tuple(sorted(lora)))
    return _build(GemmaConfig, spec, where)


def from_fixture_meta(meta: dict[str, Any] | Path, *, dtype: str = "float32") -> Pi0Config:
    """The π0 config of a golden fixture: ``meta.json`` (a path or its parsed content), key ``spec``."""
    if isinstance(meta, Path):
        if not meta.is_file():
            raise UserError(f"no fixture meta file at {meta}")
        meta = json.loads(meta.read_text())
    try:
        spec = meta["spec"]
        siglip = dict(spec["siglip"])
        patch = siglip.pop("patch_size", (14, 14))
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        cameras = spec.get("cameras") or tuple(spec.get("image_masks", {})) or OPENPI_CAMERAS
        return Pi0Config(
            llm=_gemma_from_spec(spec["llm"], "llm"),
            expert=_gemma_from_spec(spec["expert"], "expert"),
            siglip=_build(SiglipConfig, {**siglip, "patch_size": patch}, "siglip"),
            vocab_size=spec["vocab_size"],
            action_dim=spec["action_dim"],
            action_horizon=spec["action_horizon"],
            max_token_len=spec["max_token_len"],
            dtype=dtype,
            cameras=tuple(cameras),
        )
    except KeyError as exc:
        raise UserError(f"fixture meta lacks spec field {exc.args[0]!r}") from None
