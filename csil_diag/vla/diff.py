"""What fine-tuning changed: relative parameter change ‖ΔW‖ / ‖W‖ per group of a π0 checkpoint.

Groups: the vision tower (``PaliGemma/img``), the LLM (expert 0, without its embedder), the action expert (the
LLM's ``_1`` leaves), LoRA adapters, the projection heads and the embedder. Norms are Frobenius norms over all
the group's leaves together. A LoRA adapter is measured by the weight change it makes: for an adapted weight W,
ΔW = scale · A·B (attention: alpha / rank; MLP: 1, as in the forward pass) in B minus the same in A (zero where A
has no adapters), relative to ‖W‖ in A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import traverse_util

from csil_diag.errors import UserError
from csil_diag.vla.checkpoint import load_checkpoint
from csil_diag.vla.config import Pi0Config

VISION = "vision tower (PaliGemma/img)"
LLM = "LLM expert 0"
EXPERT = "action expert (_1)"
LORA = "LoRA adapters (ΔW = A·B)"
PROJECTIONS = "projection heads"
EMBEDDER = "embedder"
GROUPS = (VISION, LLM, EXPERT, LORA, PROJECTIONS, EMBEDDER)
PROJECTION_NAMES = ("action_in_proj", "action_out_proj", "state_proj", "action_time_mlp_in", "action_time_mlp_out")


@dataclass(frozen=True)
class GroupDiff:
    group: str
    leaves: int  # leaves in the group (LoRA: adapted weights)
    changed: int  # of which differ between A and B
    params: int  # parameters in B's leaves (LoRA: adapter parameters)
    norm: float  # ‖W‖ in A (LoRA: of the adapted base weights)
    delta: float  # ‖ΔW‖

    @property
    def relative(self) -> float:
        return self.delta / self.norm if self.norm > 0 else (0.0 if self.delta == 0 else math.inf)


def is_lora(path: str) -> bool:
    return "lora_a" in path or "lora_b" in path


def _expert(path: str) -> int:
    """1 for the action expert's leaves (a ``…_1`` module under the LLM), else 0."""
    return int(any(part.endswith("_1") for part in path.split("/")[2:]))


def leaf_group(path: str) -> str:
    """The group of a non-LoRA leaf path (``a/b/c``)."""
    if path.startswith("PaliGemma/img/"):
        return VISION
    if path.startswith("PaliGemma/llm/embedder/"):
        return EMBEDDER
    if path.startswith("PaliGemma/llm/"):
        return EXPERT if _expert(path) else LLM
    if path.split("/")[0] in PROJECTION_NAMES:
        return PROJECTIONS
    raise UserError(f"parameter {path} belongs to no known π0 group")


def lora_pairs(flat: dict[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """Adapted weight path → (A path, B path): ``…/q_einsum/w`` ← ``…/lora_a``; ``…/mlp/linear`` ← ``linear_lora_a``."""
    pairs = {}
    for path in flat:
        if path.endswith("/lora_a"):
            module = path[: -len("/lora_a")]
            pairs[f"{module}/w"] = (path, f"{module}/lora_b")
        elif path.endswith("_lora_a"):
            weight = path[: -len("_lora_a")]
            pairs[weight] = (path, f"{weight}_lora_b")
    return pairs


def _lora_scale(config: Pi0Config, weight: str) -> float:
    gemma = config.expert if _expert(weight) else config.llm
    return gemma.lora_alpha / gemma.lora_rank if "/attn/" in weight and gemma.lora_rank else 1.0


def _lora_delta(flat: dict[str, np.ndarray], config: Pi0Config, weight: str, a: str, b: str) -> np.ndarray:
    if a not in flat:  # no adapter on this weight: no change
        return np.zeros((), np.float64)
    return _lora_scale(config, weight) * np.matmul(flat[a].astype(np.float64), flat[b].astype(np.float64))


def _sq(x: np.ndarray) -> float:
    return float(np.sum(np.square(np.asarray(x, np.float64))))


def param_diff(a: dict, b: dict, config_a: Pi0Config, config_b: Pi0Config) -> list[GroupDiff]:
    """Per-group relative change from params ``a`` to params ``b`` (in :data:`GROUPS` order; empty groups left out)."""
    fa = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(a, sep="/").items()}
    fb = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(b, sep="/").items()}
    base_a = {k for k in fa if not is_lora(k)}
    base_b = {k for k in fb if not is_lora(k)}
    if base_a != base_b:
        odd = sorted(base_a ^ base_b)
        raise UserError(f"the checkpoints hold different models ({len(odd)} leaves differ, e.g. {odd[0]})")
    wrong = [k for k in sorted(base_a) if fa[k].shape != fb[k].shape]
    if wrong:
        raise UserError(
            f"the checkpoints hold different models ({wrong[0]}: {fa[wrong[0]].shape} vs {fb[wrong[0]].shape})"
        )
    sums: dict[str, list[float]] = {g: [0, 0, 0, 0.0, 0.0] for g in GROUPS}  # leaves, changed, params, ‖W‖², ‖ΔW‖²
    for path in sorted(base_a):
        acc = sums[leaf_group(path)]
        delta = fb[path].astype(np.float64) - fa[path].astype(np.float64)
        acc[0] += 1
        acc[1] += int(np.any(delta != 0))
        acc[2] += fb[path].size
        acc[3] += _sq(fa[path])
        acc[4] += _sq(delta)
    pairs_a, pairs_b = lora_pairs(fa), lora_pairs(fb)
    for weight in sorted(set(pairs_a) | set(pairs_b)):
        if weight not in fa:
            raise UserError(f"LoRA adapter on {weight}, which the model does not have")
        acc = sums[LORA]
        new = _lora_delta(fb, config_b, weight, *pairs_b.get(weight, ("", "")))
        old = _lora_delta(fa, config_a, weight, *pairs_a.get(weight, ("", "")))
        delta = new - old
        acc[0] += 1
        acc[1] += int(np.any(delta != 0))
        acc[2] += sum(fb[p].size for p in pairs_b.get(weight, ()) if p in fb)
        acc[3] += _sq(fa[weight])
        acc[4] += _sq(delta)
    return [
        GroupDiff(g, int(s[0]), int(s[1]), int(s[2]), math.sqrt(s[3]), math.sqrt(s[4])) for g, s in sums.items() if s[0]
    ]


def diff_checkpoints(a_dir: Path, b_dir: Path) -> list[GroupDiff]:
    """:func:`param_diff` of two checkpoints (ours, with config.json), e.g. a base and its fine-tuned model."""
    a, b = load_checkpoint(Path(a_dir)), load_checkpoint(Path(b_dir))
    return param_diff(a.params, b.params, a.config, b.config)
