"""What a HetStat run reads before it trains: the VLA (where the input or the mode needs it), the demo features of
the train and held-out splits, and the normaliser fitted on the training demos. Shared by `entropy` and `train`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from csil_diag.features.dataset import DemoFeatures, load_demo_features
from csil_diag.features.normalize import Normalizer
from csil_diag.features.sources import check_widths
from csil_diag.features.spec import InputSpec

if TYPE_CHECKING:
    from csil_diag.vla.embed import EmbedResult
    from csil_diag.vla.policy import VLAPolicy

# What the VLA reads of each demo state besides its cameras (they are checked by the embedding cache).
VLA_STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


@dataclass(frozen=True)
class RunInputs:
    spec: InputSpec
    train: DemoFeatures
    valid: DemoFeatures
    normalizer: Normalizer
    vla: VLAPolicy | None = None
    embedded: EmbedResult | None = None
    model_dir: str | None = None  # the VLA checkpoint actually used (the default resolved)


def load_vla(
    model: str | None,
    site: str,
    batch_size: int,
    spec: InputSpec,
    demos: str,
    on_embed: Callable[[int, int], None] | None = None,
) -> tuple[VLAPolicy, EmbedResult, str]:
    """The VLA (one compiled batch size for demos and rollouts), its width checked against the spec, and its outputs
    on every demo state (cached beside the dataset)."""
    from csil_diag.vla.embed import SOURCE, ensure_embeddings
    from csil_diag.vla.policy import VLAPolicy, resolve_model_dir

    model_dir = resolve_model_dir(model)
    vla = VLAPolicy.load(model_dir, site=site, batch_size=batch_size)
    check_widths(spec, {SOURCE: vla.width})
    return vla, ensure_embeddings(vla, demos, on_embed), str(model_dir)


def load_inputs(
    demos: str,
    spec: InputSpec,
    std_floor: float,
    vla: tuple[VLAPolicy, EmbedResult, str] | None = None,
    transform: str = "none",
) -> RunInputs:
    """Demo features of both splits (the VLA's cached outputs feed its source and the base actions) and the
    normaliser of the training split (with ``transform``: HetStatConfig.input_transform, fitted on it too)."""
    outputs = None if vla is None else vla[1].outputs
    train = load_demo_features(demos, spec, "train", outputs)
    valid = load_demo_features(demos, spec, "valid", outputs)
    normalizer = Normalizer.fit(train.x, std_floor, transform)
    if vla is None:
        return RunInputs(spec, train, valid, normalizer)
    return RunInputs(spec, train, valid, normalizer, vla[0], vla[1], vla[2])
