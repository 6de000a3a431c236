"""Feature sources: how each ``--input`` name is read from an observation dict.

The same functions serve demos (arrays stacked over time from robomimic HDF5) and online rollouts
(one env's observation), so expert and online states are featurised identically. Only robomimic's
standard keys are required, so real robomimic datasets work too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from csil_diag.envs.tasks import eef_vector, joints_vector
from csil_diag.errors import UserError
from csil_diag.features.spec import InputSpec


@dataclass(frozen=True)
class Source:
    """A named feature source computed from robomimic observation keys."""

    name: str
    keys: tuple[str, ...]
    compute: Callable[[dict[str, np.ndarray]], np.ndarray]
    description: str
    width: int | None = None  # None: the task's (the object state)


def _eef(obs: dict[str, np.ndarray]) -> np.ndarray:
    return eef_vector(obs["robot0_eef_pos"], obs["robot0_eef_quat"], obs["robot0_gripper_qpos"])


def _joints(obs: dict[str, np.ndarray]) -> np.ndarray:
    return joints_vector(obs["robot0_joint_pos"], obs["robot0_gripper_qpos"])


def _object(obs: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(obs["object"], np.float32)


LOWDIM_SOURCES: dict[str, Source] = {
    "eef": Source(
        "eef",
        ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"),
        _eef,
        "end-effector position, axis-angle, gripper (8)",
        8,
    ),
    "joints": Source(
        "joints",
        ("robot0_joint_pos", "robot0_gripper_qpos"),
        _joints,
        "arm joint positions and gripper fingers (9)",
        9,
    ),
    "object": Source("object", ("object",), _object, "oracle object state (10 lift, 14 can/square, 30 assembly)"),
}
# Sources computed by a model (the VLA) rather than read from observations: their values are passed to
# :func:`featurize` (cached embeddings for demos, live queries online); the width is the model's.
PI0 = "pi0"  # the π0 embedding's source name (csil_diag.vla.embed computes it)
MODEL_SOURCES: dict[str, str] = {
    PI0: "π0 embedding at --site (width: the model's, e.g. 32 for the tiny default's state site)",
}


def available_sources() -> list[str]:
    return [*LOWDIM_SOURCES, *MODEL_SOURCES]


def check_sources(spec: InputSpec) -> None:
    """Every name in the spec must be a known source."""
    for name in spec.names:
        if name not in LOWDIM_SOURCES and name not in MODEL_SOURCES:
            raise UserError(f"unknown --input source {name!r}; available: {', '.join(available_sources())}")


def model_sources(spec: InputSpec) -> tuple[str, ...]:
    """The spec's sources that need a model (e.g. ``pi0``)."""
    check_sources(spec)
    return tuple(name for name in spec.names if name in MODEL_SOURCES)


def check_widths(spec: InputSpec, widths: dict[str, int]) -> None:
    """Resolve every model source's slice against the model's width now, before any work is done."""
    for term in spec.sources:
        if term.name in widths:
            term.columns(widths[term.name])


def required_keys(spec: InputSpec) -> tuple[str, ...]:
    """The robomimic observation keys the spec's low-dimensional sources read."""
    check_sources(spec)
    keys: list[str] = []
    for name in spec.names:
        if name in LOWDIM_SOURCES:
            keys += [k for k in LOWDIM_SOURCES[name].keys if k not in keys]
    return tuple(keys)


def featurize(
    spec: InputSpec, obs: dict[str, np.ndarray], model_values: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """Observation dict (arrays with any leading shape) → features (..., D), sliced and concatenated.

    ``model_values`` holds each model source's values for the same states (source → (..., width)).
    """
    check_sources(spec)
    parts = []
    for term in spec.sources:
        if term.name in LOWDIM_SOURCES:
            values = LOWDIM_SOURCES[term.name].compute(obs)
        elif model_values is not None and term.name in model_values:
            values = np.asarray(model_values[term.name])
        else:
            raise UserError(f"source {term.name!r} needs the model's values for these states (pass --model)")
        parts.append(np.asarray(values[..., term.columns(values.shape[-1])], np.float32))
    return np.concatenate(parts, axis=-1)


def term_columns(spec: InputSpec, total: int, model_widths: dict[str, int]) -> dict[str, slice]:
    """Each term's columns in the featurised input of width ``total`` (terms are concatenated in order), keyed by the
    term as written (``pi0[:64]``, ``joints``). A model source's term is sliced from ``model_widths[name]``; at most one
    term of a task-dependent width (the object state) takes what remains."""
    widths: dict[str, int | None] = {}
    for term in spec.sources:
        if term.name in model_widths:
            widths[str(term)] = term.width(model_widths[term.name])
        else:
            full = LOWDIM_SOURCES[term.name].width
            widths[str(term)] = None if full is None else term.width(full)
    unknown = [k for k, w in widths.items() if w is None]
    known = sum(w for w in widths.values() if w is not None)
    if len(unknown) > 1 or (unknown and total - known < 1) or (not unknown and known != total):
        raise ValueError(f"cannot place the terms of {spec} in {total} columns (known widths {widths})")
    if unknown:
        widths[unknown[0]] = total - known
    columns, start = {}, 0
    for key, width in widths.items():
        columns[key] = slice(start, start + width)
        start += width
    return columns
