"""Report pages of `csil-diag train` runs (thesis Figs. 6.1–6.3): success against environment steps for CSIL, SACfD
and π0 alone, IQM over seeds with 95 % stratified-bootstrap CIs (rliable); online vs expert entropy and the coherent
reward during RL."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from csil_diag.diag.aggregate import align_seeds, curves, iqm_ci
from csil_diag.errors import UserError
from csil_diag.report.figures import PALETTE, SPLIT_STYLE
from csil_diag.runs import read_json_file, read_parquet_file


def is_train_run(run_dir: str | os.PathLike) -> bool:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return False
    try:
        return read_json_file(path, "").get("kind") == "train"
    except UserError:
        return False


def load_train_run(run_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    meta = read_json_file(run_dir / "config.json", "rerun `csil-diag train` into another --out")
    table_path = run_dir / "metrics.parquet"
    if not table_path.exists():
        raise UserError(f"{run_dir} has no metrics.parquet yet; let `csil-diag train` finish its first evaluation")
    table = read_parquet_file(table_path, f"rerun the same `csil-diag train` command on {run_dir} to rebuild it")
    if table.empty or "kind" not in table or not (table.kind == "eval").any():
        raise UserError(f"{table_path} has no evaluation yet; let `csil-diag train` finish its first one")
    meta["run_dir"] = str(run_dir)
    reeval = run_dir / "evaluation.parquet"  # `csil-diag evaluate`, where it was run
    meta["evaluation"] = read_parquet_file(reeval, "rerun `csil-diag evaluate`") if reeval.exists() else None
    table = table.assign(run=train_label(meta))
    # Seeds evaluate at slightly different env steps (the k-th evaluation of every seed is one point) and log
    # training rows at their own steps (binned to log_every, so that seeds average on one axis).
    evals = align_seeds(table[table.kind == "eval"])
    train = table[table.kind == "train"].copy()
    every = int(meta["config"].get("log_every", 1))
    train["env_steps_seed"] = train.env_steps
    train["env_steps"] = (train.env_steps / every).round().astype("int64") * every
    return meta, pd.concat([table[~table.kind.isin(["eval", "train"])], evals, train], ignore_index=True)


def train_label(meta: dict) -> str:
    cfg = meta["config"]
    model = ""
    if meta.get("vla"):
        model = f" · π0 {Path(str(meta['vla'].get('model_dir'))).name}"
    return f"{cfg['rl']['algo']} · {cfg['bc']['mode']} · {cfg['input']}{model}"


def _band(ax, stats: pd.DataFrame, color, label: str, ls: str = "-") -> None:
    ax.plot(stats.env_steps, stats.iqm, color=color, lw=2, ls=ls, label=label)
    if stats.lo.notna().any():
        ax.fill_between(stats.env_steps, stats.lo, stats.hi, color=color, alpha=0.2, lw=0)


def _seeds_text(tables: list[pd.DataFrame]) -> str:
    counts = sorted({int(t.seed.nunique()) for t in tables})
    if counts == [1]:
        return "one seed: no interval"
    return f"IQM and 95 % stratified-bootstrap CI over {'/'.join(map(str, counts))} seeds"


def success_page(runs: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """Success of the deterministic policy vs environment steps, one panel per task (thesis Figs. 6.1–6.3)."""
    tasks = sorted({m["config"]["task"] for m, _ in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [(m, t) for m, t in runs if m["config"]["task"] == task]
        for i, (_, table) in enumerate(mine):
            evals = table[table.kind == "eval"]
            _band(ax, curves(evals, "success_rate", by=("run",)), PALETTE[i % len(PALETTE)], evals.run.iloc[0])
            if "vla_success_rate" in evals and evals.vla_success_rate.notna().any():
                alone = evals.groupby("seed").vla_success_rate.first().to_numpy()
                value, _, _ = iqm_ci(alone)
                color = PALETTE[i % len(PALETTE)]
                ax.axhline(value, color=color, ls=":", lw=1.5, label=f"π0 alone ({evals.run.iloc[0]})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("success rate (deterministic policy)")
        ax.set_title(f"{task}: {_seeds_text([t for _, t in mine])}", fontsize=10)
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def entropy_page(runs: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """Online vs held-out expert entropy of the actor during RL: H(s) and the variance-only Σ log σ."""
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.4 * len(runs)), squeeze=False)
    for row, (meta, table) in enumerate(runs):
        evals = table[table.kind == "eval"]
        for col, (measure, name) in enumerate((("gaussian_entropy", "Σ log σ (variance only)"), ("entropy", "H(s)"))):
            ax = axes[row, col]
            for split in ("online", "valid"):
                column = f"{split}_{measure}"
                if column not in evals or evals[column].isna().all():
                    continue
                stats = evals.groupby("env_steps")[column].agg(["mean", "std"]).reset_index()
                style = SPLIT_STYLE[split]
                ax.plot(stats.env_steps, stats["mean"], color=style["color"], lw=2, label=style["label"])
                ax.fill_between(
                    stats.env_steps,
                    stats["mean"] - stats["std"].fillna(0),
                    stats["mean"] + stats["std"].fillna(0),
                    color=style["color"],
                    alpha=0.18,
                    lw=0,
                )
            ax.set_title(f"{train_label(meta)}\n{name}", fontsize=9)
            ax.set_xlabel("environment steps")
            ax.legend(loc="best", fontsize=7)
    fig.suptitle("Online vs expert entropy during RL (mean ± std over seeds)", fontsize=12)
    fig.tight_layout()
    return fig


def reward_page(runs: list[tuple[dict, pd.DataFrame]]) -> Figure:
    """The coherent reward on demo vs online transitions, the KL estimate of the refinement, and mean Q."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (_, table) in enumerate(runs):
        train = table[table.kind == "train"]
        if train.empty:
            continue
        color = PALETTE[i % len(PALETTE)]
        label = train.run.iloc[0]
        mean = train.groupby("env_steps").mean(numeric_only=True).reset_index()
        if "reward_demo" in mean and mean.reward_demo.notna().any():
            axes[0].plot(mean.env_steps, mean.reward_demo, color=color, ls="--", label=f"{label}: demos")
            axes[0].plot(mean.env_steps, mean.reward_online, color=color, label=f"{label}: online")
            axes[1].plot(mean.env_steps, mean.kl_estimate, color=color, label=label)
        axes[2].plot(mean.env_steps, mean.q_mean, color=color, label=label)
    for ax, title in zip(
        axes, ("coherent reward (batch mean)", "refinement: online KL estimate", "mean Q (batch)"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def _reevaluation_lines(table: pd.DataFrame | None) -> list[str]:
    """`csil-diag evaluate`'s start vs final on fresh episodes, per policy kind."""
    from csil_diag.csil.evaluate import paired_summary, per_seed

    if table is None or table.empty:
        return []
    lines = []
    for policy, frame in table.groupby("policy"):
        seeds = per_seed(frame, policy)
        n = int(frame.groupby(["seed", "at"]).size().max())
        cols = [c for c in ("start", "final") if c in seeds]
        per = ", ".join(f"{int(r.seed)}: " + " → ".join(f"{r[c]:.2f}" for c in cols) for _, r in seeds.iterrows())
        line = f"  re-evaluated ({policy}, {n} fresh episodes a seed, {' → '.join(cols)}): {per}"
        paired = paired_summary(frame, policy)
        if "p_value" in paired:
            line += f"; paired {paired['final_wins']} won / {paired['final_losses']} lost (p = {paired['p_value']:.2g})"
        lines.append(line)
    return lines


def summary_lines(runs: list[tuple[dict, pd.DataFrame]]) -> list[str]:
    lines = []
    for meta, table in runs:
        cfg = meta["config"]
        evals = table[table.kind == "eval"].sort_values(["seed", "env_steps"])
        starts = evals.groupby("seed").head(1).success_rate.to_numpy()
        finals = evals.groupby("seed").tail(1).success_rate.to_numpy()
        s0, s0_lo, s0_hi = iqm_ci(starts)
        s1, s1_lo, s1_hi = iqm_ci(finals)
        ci = lambda lo, hi: "" if math.isnan(lo) else f" [{lo:.2f}, {hi:.2f}]"
        lines += [
            f"■ {train_label(meta)}   ({meta['run_dir']})",
            f"  task {cfg['task']}; demos {cfg['demos']} ({meta['demos']['train_demos']} train / "
            f"{meta['demos']['valid_demos']} held-out); {cfg['steps']} env steps per seed, evaluations every "
            f"{cfg['eval_every']} over {cfg['eval_episodes']} episodes; "
            + (  # SACfD starts from a fresh HetStat and critic: no pre-training to name
                f"BC {cfg['bc_steps']} steps; critic pre-training {cfg['rl']['critic_pretrain_steps']} steps; "
                if cfg["rl"]["algo"] == "csil"
                else ""
            )
            + f"utd {cfg['rl']['utd']}",
            f"  success IQM at the start {s0:.2f}{ci(s0_lo, s0_hi)} → at the end {s1:.2f}{ci(s1_lo, s1_hi)} "
            f"({len(finals)} seed(s)); per seed: "
            + ", ".join(
                f"{int(seed)}: {f.success_rate.iloc[0]:.2f} → {f.success_rate.iloc[-1]:.2f} "
                f"(best {f.success_rate.max():.2f})"
                for seed, f in evals.groupby("seed")
            ),
        ]
        if "vla_success_rate" in evals and evals.vla_success_rate.notna().any():
            lines.append(f"  π0 alone: success {evals.groupby('seed').vla_success_rate.first().mean():.2f}")
        lines += _reevaluation_lines(meta.get("evaluation"))
        last = evals.groupby("seed").tail(1)
        if "auroc_gauss_valid" in last and last.auroc_gauss_valid.notna().any():
            lines.append(
                f"  last evaluation: online vs held-out Σ log σ AUROC {np.nanmean(last.auroc_gauss_valid):.3f}, "
                f"gap {np.nanmean(last.gap_gauss_valid):+.2f} (H AUROC {np.nanmean(last.auroc_valid):.3f})"
            )
        lines.append("")
    lines += [
        "Success: the deterministic policy (tanh of the mean, composed with π0 where the mode says) over fixed",
        "evaluation episodes.  IQM: interquartile mean over seeds; CI: rliable's stratified bootstrap (2000 reps).",
    ]
    return lines
