"""The collapse hunt's pages of `csil-diag report` (issue 36): slice sweeps of several π0s on one footing — AUROC
by width, one line per π0, with and without the object — and the table beside it with each π0's object/robot
sensitivity ratio."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from csil_diag.diag.object_probe import ratio_summary
from csil_diag.diag.verdict import (
    COLLAPSE_WITH_OBJECT,
    COLLAPSE_WITHOUT_OBJECT,
    collapsed_widths,
    separation_by_width,
)
from csil_diag.report.figures import PALETTE
from csil_diag.report.text_pages import text_pages

# The embedding a HetStat residual reads (the probe's name of π0's state site).
STATE_SITE = "π0 state"


def hunt_members(directory: Path) -> list[Path]:
    """A hunt directory's sweeps (children with sweep.json) and object probes (object_probe.parquet one or two
    levels down), sorted; [] when ``directory`` is not one."""
    sweeps = sorted(p.parent for p in directory.glob("*/sweep.json"))
    probes = sorted(
        {
            p.parent
            for pattern in ("*/object_probe.parquet", "*/*/object_probe.parquet")
            for p in directory.glob(pattern)
        }
    )
    return sweeps + probes


def _model_of(sweep: dict) -> str | None:
    models = {str(c.get("model")) for c in sweep.get("cells", []) if c.get("model")}
    return models.pop() if len(models) == 1 else None


def hunt_rows(
    sweeps: list[tuple[dict, list[tuple[dict, pd.DataFrame]]]], probes: list[tuple[dict, pd.DataFrame]]
) -> list[dict]:
    """One entry per slice sweep of a single π0: its name, the separation_by_width table (leading cells), the
    widths at which it collapses, and the object/robot ratios of its state site (from the probe of the same
    model, if given)."""
    ratios = {}
    for meta, table in probes:
        summary = ratio_summary(table)
        state = summary[summary.embedding == STATE_SITE].sort_values("size")
        ratios[_key(meta.get("model"))] = dict(zip(state["size"], state.object_over_robot, strict=True))
    rows = []
    for sweep, cells in sweeps:
        model = _model_of(sweep)
        if model is None or not any("width" in t.columns for _, t in cells):
            continue
        summary = pd.concat([t for _, t in cells], ignore_index=True)
        table = _with_bootstrap_for_one_seed(separation_by_width(summary), summary)
        table = table[table.selection.isin(["leading", "none"])]
        rows.append(
            {
                "name": Path(model).name,
                "sweep": sweep["path"],
                "table": table,
                "collapsed": collapsed_widths(table),
                "ratios": ratios.get(_key(model), {}),
            }
        )
    return rows


def _with_bootstrap_for_one_seed(by_width: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Where a cell has one seed (no interval over seeds), its run's own 95 % episode-cluster bootstrap interval of
    the variance-only AUROC; ``ci`` says which interval each row carries ("seeds" or "bootstrap")."""
    online = summary[summary.split == "online"]
    last = online[online.step == online.groupby("cell").step.transform("max")]
    out = by_width.assign(ci="seeds")
    for i, row in out[out.n == 1].iterrows():
        match = last[(last.width == row.width) & (last.object == row.object) & (last.selection == row.selection)]
        if len(match) == 1 and "auroc_gauss_valid_lo" in match:
            out.loc[i, ["auroc_gauss_lo", "auroc_gauss_hi"]] = (
                match[["auroc_gauss_valid_lo", "auroc_gauss_valid_hi"]].iloc[0].to_numpy()
            )
            out.loc[i, "ci"] = "bootstrap"
    return out


def _key(model: object) -> str:
    return Path(str(model)).name  # the sweep and the probe may name the model relative to different places


def hunt_figure(rows: list[dict]) -> Figure:
    """Variance-only AUROC (online vs held-out, last step) against width, one line per π0; left without the object,
    right with it; mean and 95 % t-interval over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), squeeze=False)
    widths = sorted({int(w) for r in rows for w in r["table"].width})
    position = {w: i for i, w in enumerate(widths)}
    for ax, obj in zip(axes[0], (False, True), strict=True):
        for i, row in enumerate(rows):
            part = row["table"][row["table"].object == obj].sort_values("width")
            mean = part.auroc_gauss.to_numpy()
            err = [(mean - part.auroc_gauss_lo).fillna(0).to_numpy(), (part.auroc_gauss_hi - mean).fillna(0).to_numpy()]
            x = [position[int(w)] + 0.05 * (i - (len(rows) - 1) / 2) for w in part.width]
            ax.errorbar(
                x, mean, yerr=err, color=PALETTE[i % len(PALETTE)], marker="o", capsize=3, lw=1.6, label=row["name"]
            )
        ax.axhline(0.5, color="grey", lw=1, ls=":")
        if not obj:
            ax.axhline(COLLAPSE_WITHOUT_OBJECT, color="firebrick", lw=1, ls="--", label="collapse: ≤ 0.6")
        ax.set_xticks(range(len(widths)), [str(w) if w else "0\n(joints)" for w in widths])
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("π0 embedding dimensions in the input")
        ax.set_ylabel("Σ log σ AUROC online vs held-out, last step")
        ax.set_title(f"{'with' if obj else 'without'} the object", fontsize=11)
        ax.legend(loc="lower left", fontsize=8)
    seeds = sorted({int(n) for r in rows for n in r["table"].n})
    if seeds == [1]:
        over = "one seed a point: its run's 95 % episode-cluster bootstrap CI"
    else:
        over = f"mean, 95 % CI over {'/'.join(map(str, seeds))} seeds" + (
            "; one seed: its run's bootstrap" * (1 in seeds)
        )
    fig.suptitle(f"Collapse hunt: separation by width per π0 ({over})", fontsize=11)
    fig.tight_layout()
    return fig


def hunt_table(rows: list[dict]) -> list[Figure]:
    """Per π0 × width × object: variance-only AUROC [95 % CI], H AUROC, Σ log σ gap; the collapse verdict and the
    state site's object/robot sensitivity ratio per π0."""
    header = f"{'π0':<36}{'width':>6}{'object':>8}{'seeds':>6}{'AUROC Σlogσ [95% CI]':>24}{'AUROC H':>9}{'gap':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        for r in row["table"].sort_values(["object", "width"]).itertuples():
            ci = f"[{r.auroc_gauss_lo:.2f}, {r.auroc_gauss_hi:.2f}]" if math.isfinite(r.auroc_gauss_lo) else "—"
            ci += "*" if getattr(r, "ci", "seeds") == "bootstrap" else ""
            lines.append(
                f"{row['name'][:35]:<36}{r.width:>6}{'with' if r.object else 'without':>8}{r.n:>6}"
                f"{r.auroc_gauss:>10.3f} {ci:<13}{r.auroc_h:>9.3f}{r.gap_gauss:>+8.2f}"
            )
        lines.append("")
    lines += [
        "Per π0: the collapse (without the object ≤ 0.6 while with it ≥ 0.75) and the state site's object / robot",
        "sensitivity at equal shifts (`probe object`; ≪ 1: the embedding mostly follows the robot):",
        "",
    ]
    for row in rows:
        verdict = (
            "COLLAPSED at width " + ", ".join(map(str, row["collapsed"]))
            if row["collapsed"]
            else "no collapse at any width"
        )
        ratio = ", ".join(f"{v:.2f} at {100 * s:g} cm" for s, v in sorted(row["ratios"].items())) or "not probed"
        lines.append(f"  {row['name']}: {verdict}; object / robot {ratio}")
    lines += [
        "",
        "Last BC step, leading dimensions, mean over seeds; 95 % t-interval over seeds (* one seed: the run's own",
        "episode-cluster bootstrap interval). Criterion: issue 36's "
        f"({COLLAPSE_WITHOUT_OBJECT} / {COLLAPSE_WITH_OBJECT}).",
    ]
    return text_pages("Collapse hunt: separation per π0, width and object", lines, mono=True)
