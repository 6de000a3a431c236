"""A sweep's grid: its cells (label, --input, π0 checkpoint, columns, settings) from `slice-sweep`'s widths and
selections, `compare`'s models, or `sweep --set`'s dotted settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from csil_diag.diag.entropy_run import EntropyConfig
from csil_diag.diag.sweep.audit import model_regime
from csil_diag.errors import UserError

LOWDIM_REFERENCE = "joints"  # width 0 of a slice sweep: the low-dim input every π0 cell adds to


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its directory label, its --input, its π0 checkpoint, the grid's columns, and any other
    settings it changes (dotted config keys such as ``hetstat.trunk``: `csil-diag sweep --set`)."""

    label: str
    input: str
    model: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ generic grids (--set)
# What a cell may not change: the data and the seeds are the sweep's, the model is `compare`'s grid.
UNSETTABLE = ("task", "demos", "seeds", "model")


def _setting_type(key: str) -> Any:
    """The declared type of a dotted EntropyConfig key (``steps``, ``hetstat.trunk``, ``bc.learning_rate``)."""
    import typing

    from csil_diag.config import BCConfig, HetStatConfig

    group, _, name = key.rpartition(".")
    cls = {"": EntropyConfig, "hetstat": HetStatConfig, "bc": BCConfig}.get(group)
    hints = typing.get_type_hints(cls) if cls is not None else {}
    if name not in hints or key in UNSETTABLE or hints[name] in (HetStatConfig, BCConfig):
        settable = [f"hetstat.{k}" for k in typing.get_type_hints(HetStatConfig)]
        settable += [f"bc.{k}" for k in typing.get_type_hints(BCConfig)]
        settable += [
            k
            for k, t in typing.get_type_hints(EntropyConfig).items()
            if k not in UNSETTABLE and t not in (HetStatConfig, BCConfig)
        ]
        raise UserError(f"--set {key}: not a setting a sweep can vary; choose from {', '.join(settable)}")
    return hints[name]


def _split_values(text: str) -> list[str]:
    """Comma-separated values, commas inside braces or brackets kept (``pi0{1,5}+joints``)."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += 1 if ch in "{[(" else -1 if ch in "}])" else 0
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current)
    return [v.strip() for v in values if v.strip()]


def _typed(key: str, kind: Any, text: str) -> Any:
    import types
    import typing

    target, optional = kind, False
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        optional = type(None) in args
        target = next(t for t in args if t is not type(None))
    if optional and text.lower() == "none":
        return None
    try:
        if typing.get_origin(target) is tuple:
            return tuple(int(x) for x in text.split("x"))  # hetstat.hidden=1024x1024
        if target is bool:
            if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "yes", "1")
        return target(text)
    except ValueError:
        raise UserError(f"--set {key}={text}: not a valid {getattr(target, '__name__', target)}") from None


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,…`` → (key, typed values); the key is checked against the config, each value against its type."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise UserError(f"--set takes KEY=V1,V2 (e.g. hetstat.trunk=plain,spectral); got {text!r}")
    kind = _setting_type(key)
    typed = [_typed(key, kind, v) for v in _split_values(values)]
    if len(set(map(repr, typed))) != len(typed):
        raise UserError(f"--set {text}: a value is listed twice")
    return key, typed


def apply_settings(config: EntropyConfig, settings: dict[str, Any]) -> EntropyConfig:
    """``config`` with dotted settings applied (each checked by the config's own validation)."""
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}  # as read from sweep.json
    top = {k: v for k, v in settings.items() if "." not in k}
    groups = {}
    for group in ("hetstat", "bc"):
        sub = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith(f"{group}.")}
        if sub:
            groups[group] = replace(getattr(config, group), **sub)
    return replace(config, **top, **groups)


def _label_part(key: str, value: Any) -> str:
    shown = "x".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    text = f"{key.rpartition('.')[2]}={shown}"
    return "".join(c if c.isalnum() or c in "._=+-:" else "-" for c in text)


def grid_cells(base_input: str, sets: list[tuple[str, list[Any]]]) -> list[Cell]:
    """The product of ``--set`` grids: one cell per combination, labelled by its values, columns by the short keys."""
    import itertools

    keys = [k for k, _ in sets]
    if len(set(keys)) != len(keys):
        raise UserError(f"--set names {', '.join(sorted(k for k in keys if keys.count(k) > 1))} twice; give each once")
    cells = []
    for combo in itertools.product(*(values for _, values in sets)):
        settings = json.loads(json.dumps(dict(zip(keys, combo, strict=True))))  # as sweep.json will hold them
        label = "__".join(_label_part(k, v) for k, v in settings.items())
        columns = {
            k.rpartition(".")[2]: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in settings.items()
        }
        spec_input = settings.pop("input", base_input)
        cells.append(Cell(label, spec_input, None, columns, settings))
    return cells


# ------------------------------------------------------------------------------------ grids
def parse_widths(text: str, site_width: int) -> list[int]:
    """'0,16,64,all' → [0, 16, 64, site_width]; a width past the site's is refused, naming the valid range."""
    widths = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            widths.append(site_width)
            continue
        try:
            width = int(part)
        except ValueError:
            raise UserError(f"--widths takes integers or 'all', e.g. 0,16,64,all (got {part!r})") from None
        if not 0 <= width <= site_width:
            raise UserError(f"--widths {width} is outside the site's width: use 0 … {site_width} (or 'all')")
        widths.append(width)
    if not widths:
        raise UserError("--widths must name at least one width, e.g. 0,16,64,256")
    return sorted(set(widths))


def parse_select(text: str) -> tuple[str, int]:
    """'leading' → ('leading', 1); 'random:3' → ('random', 3)."""
    if text == "leading":
        return "leading", 1
    if text.startswith("random:"):
        try:
            count = int(text.split(":", 1)[1])
        except ValueError:
            count = 0
        if count >= 1:
            return "random", count
    raise UserError(f"--select must be leading or random:R with R ≥ 1, e.g. random:3 (got {text!r})")


def parse_object(text: str) -> list[bool]:
    values = {"with": True, "without": False}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(p not in values for p in parts):
        raise UserError(f"--object takes with, without or with,without (got {text!r})")
    return [values[p] for p in dict.fromkeys(parts)]


def random_subset(site_width: int, width: int, subset: int, subset_seed: int) -> tuple[int, ...]:
    """The ``subset``-th seeded random set of ``width`` columns of a ``site_width``-wide embedding (sorted)."""
    rng = np.random.default_rng([subset_seed, width, subset])
    return tuple(int(i) for i in np.sort(rng.choice(site_width, width, replace=False)))


def slice_cells(
    widths: list[int],
    objects: list[bool],
    selects: list[tuple[str, int]],
    site_width: int,
    source: str = "pi0",
    subset_seed: int = 0,
) -> list[Cell]:
    """The cells of a slice sweep: ``pi0<selection of w>+joints[+object]``; width 0 is ``joints[+object]``."""
    cells: dict[str, Cell] = {}
    for obj in objects:
        tail = "+object" if obj else ""
        suffix = "obj" if obj else "noobj"
        for width in widths:
            if width == 0:
                label = f"w0000-lowdim-{suffix}"
                columns = {"width": 0, "selection": "none", "subset": 0, "object": obj}
                cells[label] = Cell(label, f"{LOWDIM_REFERENCE}{tail}", None, columns)
                continue
            for how, count in selects:
                if how == "random" and width == site_width:
                    # Every subset of the full width is the full width, in order: the leading cell itself (a sweep
                    # ran both once and got bit-identical numbers), so one cell, and none beside a leading one.
                    count = 0 if ("leading", 1) in selects else 1
                for subset in range(count):
                    if how == "leading":
                        term, label = f"{source}[:{width}]", f"w{width:04d}-leading-{suffix}"
                    else:
                        picked = random_subset(site_width, width, subset, subset_seed)
                        term = f"{source}{{{','.join(map(str, picked))}}}"
                        label = f"w{width:04d}-random{subset}-{suffix}"
                    columns = {"width": width, "selection": how, "subset": subset, "object": obj}
                    cells[label] = Cell(label, f"{term}+{LOWDIM_REFERENCE}{tail}", None, columns)
    return list(cells.values())


# ------------------------------------------------------------------------------------ compare (Fig. 6.6)
def compare_cells(models: list[Path], labels: list[str], input_spec: str, widths: list[int]) -> list[Cell]:
    """One cell per π0 checkpoint, all with the same --input; a sliced π0 source needs one site width for all."""
    from csil_diag.features.sources import check_widths
    from csil_diag.features.spec import InputSpec

    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise UserError(f"--labels must name each of the {len(models)} models once (got {', '.join(labels)})")
    spec = InputSpec.parse(input_spec)
    sliced = any(t.name == "pi0" and (t.start, t.stop, t.indices) != (None, None, None) for t in spec.sources)
    if sliced and len(set(widths)) > 1:
        detail = ", ".join(f"{label} {w}" for label, w in zip(labels, widths, strict=True))
        raise UserError(
            f"--input {input_spec} slices π0's embedding but the models' site widths differ ({detail}); "
            "use an unsliced pi0 or models of one size"
        )
    for label, width in zip(labels, widths, strict=True):
        try:
            check_widths(spec, {"pi0": width})
        except UserError as exc:
            raise UserError(f"model {label}: {exc}") from None
    return [
        Cell(label, str(spec), str(model), {"model": label, "regime": model_regime(model)})
        for label, model in zip(labels, models, strict=True)
    ]
