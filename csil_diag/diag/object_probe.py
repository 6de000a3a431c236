"""The object-sensitivity probe: does π0's embedding see the object, or mostly the robot (the thesis' guess)?

From demo start states, the object is moved (shifts of 1, 2, 5 cm and a 30° yaw turn) and, separately, the robot's end
effector by the same shifts (through its arm joints); both cameras are rendered again and embedded by π0 at every site.
Every dimension is standardised by its std over demo states (floored at 0.01, as runs normalise the HetStat's input),
and sensitivity = ‖Δ embedding‖ / spread, the spread being the RMS distance of demo states to their mean in that space
(so 1 is "as different as two typical demo states"). The same for the low-dim joints+object features as a reference.
π0's flow noise is the same for a state and its perturbations, so differences come from the observation alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from csil_diag.errors import UserError

SHIFTS = (0.01, 0.02, 0.05)  # metres
YAW = math.radians(30.0)
SITES = ("state", "actions", "prefix")
STD_FLOOR = 0.01  # as EntropyConfig.std_floor


@dataclass(frozen=True)
class Perturbation:
    body: str  # object | robot
    kind: str  # shift | yaw
    size: float  # metres or radians

    @property
    def label(self) -> str:
        return f"{self.body} {self.kind} {self.size * 100:.0f} cm" if self.kind == "shift" else f"{self.body} yaw 30°"


PERTURBATIONS = (
    *(Perturbation("object", "shift", s) for s in SHIFTS),
    Perturbation("object", "yaw", YAW),
    *(Perturbation("robot", "shift", s) for s in SHIFTS),
)


def apply(env, p: Perturbation, direction: np.ndarray) -> None:
    """Apply a perturbation to the env's current state; shifts go along ``direction`` (a unit vector in the table)."""
    from csil_diag.envs import perturb

    if p.body == "object":
        perturb.move_object(env, p.size * direction if p.kind == "shift" else None, p.size if p.kind == "yaw" else 0.0)
    else:
        perturb.move_eef(env, p.size * direction)


def spread(embeddings: np.ndarray) -> float:
    """RMS distance of embeddings (N, D) to their mean: the scale of 'two typical states differ'."""
    return float(np.sqrt(np.mean(np.sum(np.square(embeddings - embeddings.mean(0)), axis=1))))


def sensitivity(base: np.ndarray, moved: np.ndarray, scale: float) -> np.ndarray:
    """‖moved − base‖ / scale per start state: base, moved (N, D) → (N,)."""
    return np.linalg.norm(moved - base, axis=1) / max(scale, 1e-12)


@dataclass(frozen=True)
class ProbeStates:
    """Observations of the probe: every start state, each perturbation of it, and demo states for the spread."""

    base: list[dict[str, np.ndarray]]  # (S) start states
    moved: dict[str, list[dict[str, np.ndarray]]]  # perturbation label → (S)
    reference: list[dict[str, np.ndarray]]  # demo states spread over the demos


def collect_states(
    task: str,
    demos: str | os.PathLike,
    cameras: Sequence[str],
    image_size: int,
    n_starts: int = 50,
    reference_per_demo: int = 4,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> ProbeStates:
    """Reset to each of the first ``n_starts`` demos' first state, observe, and observe every perturbation of it."""
    import json

    from csil_diag.data.robomimic import demo_sort_key, open_demos
    from csil_diag.envs import perturb
    from csil_diag.envs.tasks import make_env

    with open_demos(demos) as f:
        env_seed = json.loads(f["data"].attrs["env_args"]).get("env_kwargs", {}).get("seed", 0)
        names = sorted(f["data"].keys(), key=demo_sort_key)[:n_starts]
        states = [f["data"][n]["states"][()] for n in names]
    if not names:
        raise UserError(f"{demos} holds no demos to start the probe from")
    rng = np.random.default_rng(seed)
    base, reference = [], []
    moved: dict[str, list[dict[str, np.ndarray]]] = {p.label: [] for p in PERTURBATIONS}
    total = len(states) * (1 + len(PERTURBATIONS) + reference_per_demo)
    done = 0
    with make_env(task, cameras=tuple(cameras), image_size=image_size, seed=env_seed) as env:
        for demo_states in states:
            angle = rng.uniform(0, 2 * math.pi)
            direction = np.array([math.cos(angle), math.sin(angle), 0.0])
            base.append(env.reset_to_state(demo_states[0]))
            for p in PERTURBATIONS:
                env.reset_to_state(demo_states[0])
                apply(env, p, direction)
                moved[p.label].append(perturb.observe(env))
            for t in np.linspace(0, len(demo_states) - 1, reference_per_demo).astype(int):
                reference.append(env.reset_to_state(demo_states[t]))
            done += 1 + len(PERTURBATIONS) + reference_per_demo
            if on_progress is not None:
                on_progress(done, total)
    return ProbeStates(base, moved, reference)


def probe_table(
    states: ProbeStates, embedders: dict[str, Callable[[list[dict[str, np.ndarray]], list[int]], np.ndarray]]
) -> pd.DataFrame:
    """Sensitivities per embedder (a site of π0, or low-dim features) and perturbation.

    ``embedders[name](observations, noise_ids)`` → (N, D); a start state and its perturbations share a noise id."""
    n = len(states.base)
    ids = list(range(n))
    rows = []
    for name, embed in embedders.items():
        reference = embed(states.reference, list(range(n, n + len(states.reference))))
        # Per-dimension standardisation with the demo states' statistics (std floored as runs floor it): distances in
        # the space the HetStat sees, not dominated by a few large-valued dimensions.
        std = np.maximum(reference.std(0), STD_FLOOR)
        base = embed(states.base, ids) / std
        scale = spread(reference / std)
        for p in PERTURBATIONS:
            values = sensitivity(base, embed(states.moved[p.label], ids) / std, scale)
            rows.append(
                {
                    "embedding": name,
                    "perturbation": p.label,
                    "body": p.body,
                    "kind": p.kind,
                    "size": p.size,
                    "sensitivity": float(values.mean()),
                    "sensitivity_std": float(values.std()),
                    "spread": scale,
                    "n_starts": n,
                }
            )
    return pd.DataFrame(rows)


def lowdim_embedder(spec: str = "joints+object"):
    from csil_diag.features.sources import featurize
    from csil_diag.features.spec import InputSpec

    parsed = InputSpec.parse(spec)

    def embed(observations: list[dict[str, np.ndarray]], ids: list[int]) -> np.ndarray:
        return np.stack([featurize(parsed, o) for o in observations])

    return embed


def vla_embedder(model_dir: str | os.PathLike, site: str, task: str, batch: int = 16):
    from csil_diag.vla.policy import VLAPolicy

    policy = VLAPolicy.load(Path(model_dir), site=site, batch_size=batch)

    def embed(observations: list[dict[str, np.ndarray]], ids: list[int]) -> np.ndarray:
        out = []
        for start in range(0, len(observations), batch):
            chunk = observations[start : start + batch]
            out.append(policy(chunk, task, ids[start : start + batch]).embedding)
        return np.concatenate(out)

    return embed, policy


def ratio_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per embedding and shift size: object / robot sensitivity (≪ 1: the embedding mostly sees the robot)."""
    shifts = table[table.kind == "shift"]
    pivot = shifts.pivot_table(index=["embedding", "size"], columns="body", values="sensitivity").reset_index()
    pivot["object_over_robot"] = pivot["object"] / pivot["robot"].where(pivot["robot"] > 0)
    return pivot
