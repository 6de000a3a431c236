"""The collapse hunt's report pages (issue 36): per π0 on one footing, the collapse criterion, probe ratios."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from csil_diag.diag.verdict import collapsed_widths, separation_by_width
from csil_diag.report.hunt import hunt_figure, hunt_members, hunt_rows, hunt_table


def _cells(values: dict[tuple[int, bool], list[float]]) -> list[tuple[dict, pd.DataFrame]]:
    """A slice sweep's loaded cells without running it: per (width, object) the last step's AUROC of each seed."""
    cells = []
    for (width, obj), aurocs in values.items():
        label = f"w{width:04d}-{'leading' if width else 'lowdim'}-{'obj' if obj else 'noobj'}"
        frame = pd.DataFrame(
            {
                "seed": range(len(aurocs)),
                "step": 1000,
                "split": "online",
                "auroc_gauss_valid": aurocs,
                "auroc_valid": aurocs,
                "gap_gauss_valid": [4 * (a - 0.5) for a in aurocs],
            }
        ).assign(cell=label, width=width, object=obj, selection="leading" if width else "none")
        cells.append(({"label": label}, frame))
    return cells


def _sweep(path: str, model: str, values: dict) -> tuple[dict, list]:
    cells = _cells(values)
    return {"path": path, "cells": [{"label": m["label"], "model": model} for m, _ in cells]}, cells


COLLAPSING = {
    (0, False): [0.55, 0.57, 0.56],
    (0, True): [0.80, 0.78, 0.79],
    (16, False): [0.70, 0.72, 0.68],
    (16, True): [0.80, 0.82, 0.81],
    (64, False): [0.55, 0.58, 0.52],  # mean 0.55: collapsed beside 0.80 with the object
    (64, True): [0.80, 0.79, 0.81],
}


def test_the_collapse_needs_both_halves_of_the_criterion() -> None:
    table = separation_by_width(pd.concat([t for _, t in _cells(COLLAPSING)]))
    assert collapsed_widths(table) == [64]  # width 0 (no π0) is never "π0 collapsed", though it reads 0.56 / 0.79
    edge = {(8, False): [0.6, 0.6], (8, True): [0.75, 0.75]}  # the bounds are inclusive
    assert collapsed_widths(separation_by_width(pd.concat([t for _, t in _cells(edge)]))) == [8]
    for values in (
        {(8, False): [0.61, 0.61], (8, True): [0.9, 0.9]},  # separates without the object
        {(8, False): [0.5, 0.5], (8, True): [0.74, 0.74]},  # the object does not rescue it: no contrast
        {(8, False): [0.5, 0.5]},  # no object-augmented cell to contrast with
    ):
        assert collapsed_widths(separation_by_width(pd.concat([t for _, t in _cells(values)]))) == []


def _probe(model: str, object_shift: float, robot_shift: float) -> tuple[dict, pd.DataFrame]:
    rows = []
    for body, per_cm in (("object", object_shift), ("robot", robot_shift)):
        for size in (0.01, 0.05):
            rows.append(("π0 state", f"{body} shift", body, "shift", size, per_cm * size * 100))
            rows.append(("π0 prefix", f"{body} shift", body, "shift", size, 1.0))
    rows.append(("π0 state", "object yaw 30°", "object", "yaw", 0.52, 9.0))  # a rotation is no shift: not in a ratio
    frame = pd.DataFrame(rows, columns=["embedding", "perturbation", "body", "kind", "size", "sensitivity"])
    return {"model": model}, frame


def test_rows_pair_each_pi0s_sweep_with_its_own_probe() -> None:
    steady = {k: [0.8, 0.8, 0.8] for k in COLLAPSING}
    sweeps = [
        _sweep("runs/hunt/a", "/abs/models/lift-dinov2-s-lora-frozen-vision", COLLAPSING),
        _sweep("runs/hunt/b", "models/lift-siglip-lora-frozen-vision", steady),
        ({"path": "runs/cmp", "cells": [{"model": "x"}, {"model": "y"}]}, _cells(steady)),  # a compare: no one π0
    ]
    probes = [
        _probe("models/lift-dinov2-s-lora-frozen-vision", 0.1, 0.4),  # named relative to another place
        _probe("models/lift-siglip-lora-frozen-vision", 0.2, 0.2),
    ]
    rows = hunt_rows(sweeps, probes)
    assert [r["name"] for r in rows] == ["lift-dinov2-s-lora-frozen-vision", "lift-siglip-lora-frozen-vision"]
    assert [r["collapsed"] for r in rows] == [[64], []]
    assert rows[0]["ratios"] == pytest.approx({0.01: 0.25, 0.05: 0.25})  # the state site's, not the prefix's 1.0
    assert rows[1]["ratios"] == pytest.approx({0.01: 1.0, 0.05: 1.0})
    text = "\n".join(t.get_text() for fig in hunt_table(rows) for t in fig.texts)
    assert "lift-dinov2-s-lora-frozen-vision: COLLAPSED at width 64; object / robot 0.25 at 1 cm" in text
    assert "lift-siglip-lora-frozen-vision: no collapse at any width; object / robot 1.00 at 1 cm" in text
    fig = hunt_figure(rows)
    without, with_object = fig.axes
    labels = [t.get_text() for t in without.get_legend().get_texts()]
    assert sorted(labels) == sorted([r["name"] for r in rows] + ["collapse: ≤ 0.6"])
    assert len(with_object.get_legend().get_texts()) == 2  # one line per π0 in each panel
    plt.close(fig)


def test_a_hunt_directory_stands_for_its_sweeps_and_probes(tmp_path: Path) -> None:
    for sweep in ("b-sweep", "a-sweep"):
        (tmp_path / sweep / "object-probe").mkdir(parents=True)
        (tmp_path / sweep / "sweep.json").write_text("{}")
        (tmp_path / sweep / "object-probe" / "object_probe.parquet").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    members = [p.relative_to(tmp_path).as_posix() for p in hunt_members(tmp_path)]
    assert members == ["a-sweep", "b-sweep", "a-sweep/object-probe", "b-sweep/object-probe"]
    assert hunt_members(tmp_path / "notes") == []


def test_a_one_seed_cell_carries_its_runs_bootstrap_interval_and_says_so() -> None:
    values = {(16, False): [0.7], (16, True): [0.8, 0.82, 0.84]}
    cells = _cells(values)
    for _, frame in cells:  # each run's own episode-cluster bootstrap interval
        frame["auroc_gauss_valid_lo"] = frame.auroc_gauss_valid - 0.1
        frame["auroc_gauss_valid_hi"] = frame.auroc_gauss_valid + 0.05
    (row,) = hunt_rows([({"path": "s", "cells": [{"model": "m"}]}, cells)], [])
    table = row["table"].set_index("object")
    assert table.loc[False, "ci"] == "bootstrap"
    assert (table.loc[False, "auroc_gauss_lo"], table.loc[False, "auroc_gauss_hi"]) == pytest.approx((0.6, 0.75))
    assert table.loc[True, "ci"] == "seeds"  # three seeds: the t-interval over them, symmetric about the mean
    assert table.loc[True, "auroc_gauss_hi"] - 0.82 == pytest.approx(0.82 - table.loc[True, "auroc_gauss_lo"])
    text = "\n".join(t.get_text() for fig in hunt_table([row]) for t in fig.texts)
    assert "[0.60, 0.75]*" in text
