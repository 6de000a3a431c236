"""Figures of the stationarity report; each takes run tables and returns a matplotlib Figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

PALETTE = sns.color_palette("colorblind")
SPLIT_STYLE = {
    "online": {"color": PALETTE[3], "label": "online (stochastic rollouts)", "ls": "-"},
    "valid": {"color": PALETTE[0], "label": "expert, held-out demos", "ls": "-"},
    "train": {"color": PALETTE[0], "label": "expert, training demos", "ls": "--"},
}
plt.rcParams.update(
    {
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "legend.fontsize": 9,
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "axes.grid": True,
        "grid.alpha": 0.3,
    }
)


def run_label(meta: dict) -> str:
    if "label" in meta:  # a sweep's cell
        return meta["label"]
    from csil_diag.config import HetStatConfig, from_dict, remedy_label

    cfg = meta["config"]
    cov = cfg["hetstat"]["covariance"]
    label = f"{cfg['task']} · {cfg['input']}"
    remedies = remedy_label(from_dict(HetStatConfig, cfg["hetstat"]))
    label = f"{label} · {remedies}" if remedies else label
    return label if cov == "full" else f"{label} · DIAGONAL covariance"


def over_seeds(tables: list[pd.DataFrame] | pd.DataFrame) -> str:
    """'mean ± std over N seeds', or 'one seed' when there is nothing to average (titles must not claim a band)."""
    tables = tables if isinstance(tables, list) else [tables]
    counts = sorted({int(t.seed.nunique()) for t in tables})
    if counts == [1]:
        return "one seed"
    return f"mean ± std over {'/'.join(map(str, counts))} seeds"


def _seed_band(ax, frame: pd.DataFrame, column: str, style: dict) -> None:
    """Mean ± std over seeds against the BC step."""
    stats = frame.groupby("step")[column].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    ax.plot(stats["step"], stats["mean"], color=style["color"], ls=style["ls"], lw=2, label=style["label"])
    ax.fill_between(
        stats["step"],
        stats["mean"] - stats["std"],
        stats["mean"] + stats["std"],
        color=style["color"],
        alpha=0.18,
        lw=0,
    )


def _grid(n: int, width: float = 5.2, height: float = 3.8) -> tuple[Figure, np.ndarray]:
    cols = min(n, 2)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def entropy_curves(runs: list[tuple[dict, pd.DataFrame]], column: str = "entropy") -> Figure:
    """Online vs expert entropy during BC pre-training, one panel per run (thesis Fig. 6.4)."""
    fig, axes = _grid(len(runs))
    for ax, (meta, table) in zip(axes.flat, runs, strict=False):
        for split, style in SPLIT_STYLE.items():
            _seed_band(ax, table[table.split == split], column, style)
        seeds = table.seed.nunique()
        ax.set_title(f"{run_label(meta)}  ({seeds} seed{'s' * (seeds > 1)})")
        ax.set_xlabel("BC pre-training step")
        what = "action entropy H(s) [nats]" if column == "entropy" else "pre-squash Gaussian entropy [nats]"
        ax.set_ylabel(what)
        ax.legend(loc="best")
    name = "Action entropy H(s)" if column == "entropy" else "Variance only: Gaussian entropy Σ log σ(s)"
    fig.suptitle(f"{name}, online vs expert states\nduring pre-training ({over_seeds([t for _, t in runs])})")
    fig.tight_layout()
    return fig


def separation_curves(runs: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """AUROC (online vs expert) and the entropy gap with its 95 % CI, per run."""
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.6 * len(runs)), squeeze=False)
    for row, (meta, table) in zip(axes, runs, strict=False):
        online = table[table.split == "online"]
        ax = row[0]
        for col, style in (
            ("auroc_valid", SPLIT_STYLE["valid"]),
            ("auroc_train", SPLIT_STYLE["train"]),
            ("auroc_gauss_valid", {"color": PALETTE[2], "ls": "-.", "label": "held-out, Gaussian entropy"}),
        ):
            label = style["label"] if col == "auroc_gauss_valid" else f"vs {style['label']}"
            _seed_band(ax, online, col, {**style, "label": label})
        ax.axhline(0.5, color="grey", lw=1, ls=":")
        ax.axhline(0.8, color="grey", lw=1, ls="--", alpha=0.6)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("BC pre-training step")
        ax.set_ylabel("AUROC (online > expert)")
        ax.set_title(f"{run_label(meta)}: separation")
        ax.legend(loc="lower right")
        ax = row[1]
        for seed, frame in online.groupby("seed"):
            color = PALETTE[int(seed) % len(PALETTE)]
            ax.errorbar(
                frame["step"],
                frame["gap_valid"],
                # numpy, not Series: matplotlib calls float() on a one-point run's Series (deprecated in pandas)
                yerr=np.vstack([frame.gap_valid - frame.gap_valid_lo, frame.gap_valid_hi - frame.gap_valid]),
                color=color,
                marker="o",
                ms=3,
                capsize=2,
                lw=1.2,
                label=f"seed {seed}",
            )
        ax.axhline(0.0, color="grey", lw=1, ls=":")
        ax.set_xlabel("BC pre-training step")
        ax.set_ylabel("H(online) − H(held-out) [nats]")
        ax.set_title(f"{run_label(meta)}: H gap, 95 % CI", fontsize=10)
        ax.legend(loc="best")
    fig.tight_layout()
    return fig


def per_dimension(runs: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """Per action dimension at the last step: mean std (online vs held-out) and the std AUROC."""
    dims = ["Δx", "Δy", "Δz", "Δrx", "Δry", "Δrz", "grip"]
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.4 * len(runs)), squeeze=False)
    for row, (meta, table) in zip(axes, runs, strict=False):
        last = table[table.step == table.step.max()]
        x = np.arange(len(dims))
        for offset, split in ((-0.2, "valid"), (0.2, "online")):
            frame = last[last.split == split]
            means = [frame[f"std_dim{i}"].mean() for i in range(len(dims))]
            sds = [frame[f"std_dim{i}"].std() if len(frame) > 1 else 0.0 for i in range(len(dims))]
            row[0].bar(
                x + offset,
                means,
                width=0.4,
                yerr=sds,
                color=SPLIT_STYLE[split]["color"],
                label=SPLIT_STYLE[split]["label"],
                capsize=2,
            )
        row[0].set_xticks(x, dims)
        row[0].set_ylabel("predictive std σ_i")
        row[0].set_title(f"{run_label(meta)}: std per dimension (step {int(last.step.max())})")
        row[0].legend(loc="best")
        online = last[last.split == "online"]
        aurocs = [online[f"auroc_std_dim{i}_valid"].mean() for i in range(len(dims))]
        row[1].bar(x, aurocs, color=PALETTE[2])
        row[1].axhline(0.5, color="grey", lw=1, ls=":")
        row[1].set_ylim(0, 1)
        row[1].set_xticks(x, dims)
        row[1].set_ylabel("AUROC of σ_i (online > held-out)")
        row[1].set_title(f"{run_label(meta)}: which dimensions separate", fontsize=10)
        cap = STD_CAP_FRACTION * meta["config"]["hetstat"].get("prior_variance", 0.75) ** 0.5
        capped = [
            dims[i]
            for i in range(len(dims))
            if all((last[last.split == s][f"std_dim{i}"] > cap).all() for s in ("valid", "online"))
        ]
        if capped:  # said under the axis, where no bar or legend can hide it
            row[0].set_xlabel(
                f"at the σ cap on every split: {', '.join(capped)} (flat by construction, not a collapse)"
            )
    fig.tight_layout()
    return fig


def success_curves(runs: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """Deterministic-policy success rate during pre-training."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, (meta, table) in enumerate(runs):
        online = table[table.split == "online"]
        _seed_band(
            ax,
            online,
            "success_rate",
            {"color": PALETTE[i % len(PALETTE)], "ls": "-", "label": run_label(meta)},
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("BC pre-training step")
    ax.set_ylabel("success rate (deterministic policy)")
    ax.set_title(f"Task success during pre-training ({over_seeds([t for _, t in runs])})")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


# CSIL's σ = √prior_var · tanh(…) never exceeds √prior_var; a dimension above this fraction of it on every split
# (the gripper, whose ±1 demo actions saturate the NLL) is flat by construction.
STD_CAP_FRACTION = 0.99


def comparison_overlay(runs: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """Every run on one axis: separation (AUROC online vs held-out) of the variance-only measure and of H, and the
    variance-only gap — so compared runs are read against each other, not across pages."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), squeeze=False)
    left, right = axes[0]
    for i, (meta, table) in enumerate(runs):
        color = PALETTE[i % len(PALETTE)]
        online = table[table.split == "online"]
        label = run_label(meta)
        _seed_band(left, online, "auroc_gauss_valid", {"color": color, "ls": "-", "label": f"{label}: Σ log σ"})
        _seed_band(left, online, "auroc_valid", {"color": color, "ls": "--", "label": f"{label}: H"})
        _seed_band(right, online, "gap_gauss_valid", {"color": color, "ls": "-", "label": label})
    left.axhline(0.5, color="grey", lw=1, ls=":")
    left.set_ylim(0.0, 1.0)
    left.set_xlabel("BC pre-training step")
    left.set_ylabel("AUROC, online vs held-out expert")
    left.set_title("separation: variance only (solid) and H (dashed)", fontsize=11)
    left.legend(loc="lower right", fontsize=7)
    right.axhline(0.0, color="grey", lw=1, ls=":")
    right.set_xlabel("BC pre-training step")
    right.set_ylabel("Σ log σ(online) − Σ log σ(held-out) [nats]")
    right.set_title("variance-only gap", fontsize=11)
    right.legend(loc="best", fontsize=7)
    fig.suptitle(f"All runs on one axis ({over_seeds([t for _, t in runs])})")
    fig.tight_layout()
    return fig


def width_headline(table: pd.DataFrame, sweeps: list[str]) -> Figure:
    """Thesis Fig. 6.5: separation at the last step (AUROC online vs held-out) against embedding width, with and
    without the oracle object state; mean and 95 % CI over seeds (and random subsets). Width 0 = joints only."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), squeeze=False)
    widths = sorted(table.width.unique())
    position = {w: i for i, w in enumerate(widths)}
    styles = {
        (True, "leading"): (PALETTE[0], "-", "o"),
        (False, "leading"): (PALETTE[3], "-", "o"),
        (True, "random"): (PALETTE[0], "--", "s"),
        (False, "random"): (PALETTE[3], "--", "s"),
    }
    for ax, (name, title) in zip(
        axes[0], (("gauss", "variance only: Σ log σ"), ("h", "sampled entropy H")), strict=True
    ):
        for (obj, selection), (color, ls, marker) in styles.items():
            rows = table[(table.object == obj) & (table.selection.isin([selection, "none"]))].sort_values("width")
            if rows.selection.eq("none").all():
                continue
            x = [position[w] + (0.06 if selection == "random" else 0.0) for w in rows.width]
            mean = rows[f"auroc_{name}"].to_numpy()
            low = (mean - rows[f"auroc_{name}_lo"]).fillna(0).to_numpy()
            high = (rows[f"auroc_{name}_hi"] - mean).fillna(0).to_numpy()
            label = f"{'with' if obj else 'without'} object, {selection}"
            ax.errorbar(x, mean, yerr=[low, high], color=color, ls=ls, marker=marker, capsize=3, lw=1.6, label=label)
        ax.axhline(0.5, color="grey", lw=1, ls=":")
        ax.set_xticks(range(len(widths)), [str(w) if w else "0\n(joints)" for w in widths])
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("π0 embedding dimensions in the input")
        ax.set_ylabel("AUROC online vs held-out, last step")
        ax.set_title(title, fontsize=11)
        ax.legend(loc="lower left", fontsize=8)
    if int(table.n.max()) == 1:
        over = "one seed and subset per point: no interval"
    else:
        n = f"{int(table.n.min())}–{int(table.n.max())}" if table.n.min() != table.n.max() else str(int(table.n.min()))
        over = f"mean, 95 % CI over {n} values (seeds × subsets)"
    fig.suptitle(f"Separation against embedding width ({' + '.join(sweeps)}; {over})")
    fig.tight_layout()
    return fig


def trunk_probe_page(probes: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """AUROC of the nearest-demo distance (online vs held-out) in the input, bottleneck and random-feature spaces, and
    of the head's Σ log σ (dashed: a Bayesian linear head's on the same features), against the BC step, one panel per
    run (mean over seeds, with the seeds' CIs as bars)."""
    from csil_diag.diag.trunk_probe import HEAD, POSTERIOR, TERM

    fig, axes = _grid(len(probes))
    colors = {"input": PALETTE[0], "bottleneck": PALETTE[1], "features": PALETTE[2], HEAD: PALETTE[3], POSTERIOR: "k"}
    for ax, (meta, frame) in zip(axes.flat, probes, strict=False):
        terms = iter(PALETTE[4:])
        for space, part in frame.groupby("space", sort=False):
            stats = part.groupby("step")[["auroc", "auroc_lo", "auroc_hi"]].mean().reset_index()
            err = np.vstack([stats.auroc - stats.auroc_lo, stats.auroc_hi - stats.auroc]).clip(min=0)
            term = space.startswith(TERM)  # one part of the input (one --input term): thin, dotted
            ax.errorbar(
                stats.step,
                stats.auroc,
                yerr=np.nan_to_num(err),
                color=next(terms, None) if term else colors.get(space),
                marker="o",
                lw=1 if space == POSTERIOR or term else 2,
                ls="--" if space == POSTERIOR else ":" if term else "-",
                capsize=3,
                label=space,
            )
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("BC pre-training step")
        ax.set_ylabel("AUROC online vs held-out\n(distance to nearest demo; head: Σ log σ)")
        ax.set_title(run_label(meta), fontsize=10)
        ax.legend(loc="best")
    fig.suptitle("Trunk probe: where is the online/expert distinction lost?", fontsize=12)
    fig.tight_layout()
    return fig


def projection_page(meta: dict, frame: pd.DataFrame, colour: str = "split") -> Figure:
    """One run's projection: rows = spaces, columns = BC steps; points coloured by split, time in episode or success."""
    spaces = list(dict.fromkeys(frame.space))
    steps = sorted(frame.step.unique())
    fig, axes = plt.subplots(len(spaces), len(steps), figsize=(4.2 * len(steps), 3.6 * len(spaces)), squeeze=False)
    for r, space in enumerate(spaces):
        for c, step in enumerate(steps):
            ax = axes[r, c]
            part = frame[(frame.space == space) & (frame.step == step)]
            if colour == "split":
                for split in ("train", "valid", "online"):
                    pts = part[part.split == split]
                    style = SPLIT_STYLE[split]
                    ax.scatter(
                        pts.x,
                        pts.y,
                        s=3,
                        alpha=0.5,
                        color=style["color"],
                        label=style["label"],
                        marker="x" if split == "train" else "o",
                    )
            else:
                online = part[part.split == "online"]
                ax.scatter(part.x, part.y, s=2, color="lightgrey", alpha=0.4, label="expert")
                values = online.t if colour == "t" else online.success.astype(float)
                sc = ax.scatter(online.x, online.y, s=4, c=values, cmap="viridis", label="online")
                if r == 0 and c == len(steps) - 1:
                    fig.colorbar(sc, ax=ax, label="time in episode" if colour == "t" else "episode succeeded")
            ax.set_title(f"{space} · step {int(step)}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c == 0:
                ax.legend(loc="best", fontsize=7, markerscale=3)
    method = frame.method.iloc[0].upper()
    what = {"split": "split", "t": "time in episode (online)", "success": "success (online)"}[colour]
    fig.suptitle(f"{method} projections of {run_label(meta)}, coloured by {what}; one fit per space", fontsize=11)
    fig.tight_layout()
    return fig


def object_probe_page(probes: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """Sensitivity (‖Δ embedding‖ / spread over the demos) to object vs robot moves, per embedding, one panel per
    probed model."""
    fig, axes = _grid(len(probes), width=6.5, height=4.2)
    for ax, (meta, table) in zip(axes.flat, probes, strict=False):
        labels = list(dict.fromkeys(table.perturbation))
        names = list(dict.fromkeys(table.embedding))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            part = table[table.embedding == name].set_index("perturbation").loc[labels]
            xs = np.arange(len(labels)) + i * width
            ax.bar(
                xs,
                part.sensitivity,
                width,
                yerr=part.sensitivity_std,
                color=PALETTE[i % len(PALETTE)],
                label=name,
                capsize=2,
            )
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("‖Δ‖ / spread over demos")
        ax.set_title(f"{Path(str(meta.get('model'))).name} ({meta.get('n_starts')} start states)", fontsize=10)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle("Object-sensitivity probe: does the embedding see the object or the robot?", fontsize=12)
    fig.tight_layout()
    return fig
