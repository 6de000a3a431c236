"""`csil-diag report`: a multi-page PDF (plus one PNG per figure) that reads only run directories."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from csil_diag import __version__
from csil_diag.diag.verdict import Verdict, run_verdict, separation_by_width
from csil_diag.errors import UserError
from csil_diag.report import figures
from csil_diag.report.hunt import hunt_figure, hunt_members, hunt_rows, hunt_table
from csil_diag.report.sweep_pages import audit_page, remedies_page, remedy_rows, settings_page, width_groups
from csil_diag.report.text_pages import text_pages
from csil_diag.runs import atomic_write_bytes, check_output_file, now_utc, read_json_file, read_parquet_file, umask_mode


@dataclass(frozen=True)
class ReportSummary:
    pdf: Path
    pngs: list[Path]
    pages: int
    tables: list[Path] = field(default_factory=list)  # CSVs of the pages' numbers (the width headline's)


def load_run(run_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """(config.json, entropy.parquet) of a run directory, with one-line errors."""
    run_dir = Path(run_dir)
    cfg, table = run_dir / "config.json", run_dir / "entropy.parquet"
    if not cfg.exists():
        raise UserError(f"{run_dir} is not a csil-diag run directory (no config.json); run `csil-diag entropy` first")
    if not table.exists():
        raise UserError(f"{run_dir} has no entropy.parquet yet; let `csil-diag entropy` finish a point first")
    meta = read_json_file(cfg, "the run directory is damaged; rerun `csil-diag entropy` into another --out")
    frame = read_parquet_file(
        table, f"rerun the same `csil-diag entropy` command on {run_dir} to rebuild it from its points/"
    )
    if not isinstance(meta, dict) or not {"config", "demos", "versions"} <= set(meta):
        raise UserError(f"{cfg} is not an entropy run's config.json (fields missing); point report at run directories")
    if frame.empty:
        raise UserError(f"{table} is empty; let `csil-diag entropy` finish a point first")
    meta["run_dir"] = str(run_dir)
    return meta, frame


def cover_page(runs: list[tuple[dict, pd.DataFrame]], sweeps: list[dict] | None = None) -> list[Figure]:
    lines = [
        f"csil-diag {__version__} · report generated {now_utc()}",
        "",
        "Question: does the HetStat's action entropy on online states (visited by its own stochastic",
        "rollouts) rise above its entropy on expert states during BC pre-training?  CSIL's coherent reward",
        "and exploration rely on it (thesis §3.2, §6.3).  Every number here comes from the run directories",
        "listed below; nothing is recomputed.",
        "",
    ]
    for meta, table in runs:
        cfg = meta["config"]
        hs, bc = cfg["hetstat"], cfg["bc"]
        lines += [
            f"Run {meta['run_dir']}  ({figures.run_label(meta)})",
            f"  demos {cfg['demos']}  (sha256 {meta['demos']['fingerprint']}): "
            f"{meta['demos']['train_demos']} train / {meta['demos']['valid_demos']} held-out demos, "
            f"{meta['demos']['train_states']} / {meta['demos']['valid_states']} states",
            f"  seeds {sorted(table.seed.unique().tolist())}; BC steps {cfg['steps']} "
            f"(evaluated every {cfg['every']}); "
            f"lr {bc['learning_rate']}, batch {bc['batch_size']}, AdamW wd {bc['weight_decay']}, mode {bc['mode']}",
            f"  HetStat: hidden {hs['hidden']}, bottleneck {hs['bottleneck']}, F = {hs['features']}, "
            f"{hs['activation']}, {hs['covariance']} covariance, log ℓ₀ {hs['log_lengthscale_init']}",
            f"  entropy: K = {cfg['k_samples']} samples/state; online states from {cfg['episodes']} stochastic "
            f"rollouts; success from {cfg['eval_episodes']} deterministic rollouts",
            f"  input width {meta['input_width']}, normalised with training-demo statistics, "
            f"std floor {cfg['std_floor']}"
            + (
                f"; then {hs['input_transform']} to width {meta.get('model_input_width')} (fitted on train demos)"
                if hs.get("input_transform", "none") != "none"
                else ""
            ),
            f"  created {meta.get('created')}, last point written {meta.get('updated')}",
        ]
        vla = meta.get("vla")
        if vla:
            lines.append(
                f"  π0: {vla.get('model_dir')} (fingerprint {vla.get('fingerprint')}), site {vla.get('site')} "
                f"(width {vla.get('width')}), replan {vla.get('replan')}; the HetStat is a {bc['mode']} on π0's action"
            )
        lines.append("")
    v = runs[0][0]["versions"]
    lines += [
        "Versions: " + ", ".join(f"{k} {v[k]}" for k in ("jax", "flax", "robosuite", "mujoco", "numpy") if k in v),
        f"Machine: {v.get('machine')} · {v.get('cpus')} CPUs · Python {v.get('python')}",
    ]
    for sweep in sweeps or []:
        lines += [
            "",
            f"Sweep {sweep['path']} ({sweep['kind']}, {len(sweep['cells'])} runs): {sweep['command']}",
            *(
                f"  session {i}: {s.get('backend')} backend, {s.get('parallel')} concurrent runs, "
                f"{s.get('seconds', '?')} s, CPU utilisation {s.get('cpu_utilisation', '?')}"
                for i, s in enumerate(sweep.get("sessions", []))
            ),
        ]
    return text_pages("Stationarity analysis of the HetStat residual", lines)


def verdict_of(meta: dict, table: pd.DataFrame) -> Verdict:
    return run_verdict(table, int(meta["config"]["episodes"]), int(meta["demos"]["valid_demos"]))


def verdict_page(runs: list[tuple[dict, pd.DataFrame]]) -> list[Figure]:
    """Per run: separated or not on the variance-only measure, with its CI and what it rests on."""
    lines = [
        "Measure: the pre-squash Gaussian entropy Σ log σ(s), the HetStat's predictive variance itself, online states",
        "against held-out expert states at the last evaluated step; per seed the gap's 95 % episode-cluster bootstrap",
        "CI decides (above 0: separated; below 0: reversed, i.e. collapsed; containing 0: not separated).  H(s), the",
        "thesis' sampled entropy, is shown beside it: it also moves with the tanh Jacobian at the composed action.",
        "",
    ]
    for meta, table in runs:
        verdict = verdict_of(meta, table)
        lines += [f"■ {figures.run_label(meta)}   ({meta['run_dir']})", f"  {verdict.sentence}"]
        for s in verdict.seeds:
            lines.append(
                f"    seed {s.seed}: {s.outcome:<13} Σ log σ gap {s.gap:+.2f} [{s.low:+.2f}, {s.high:+.2f}], "
                f"AUROC {s.auroc:.3f}"
                + ("" if math.isnan(s.auroc_low) else f" [{s.auroc_low:.3f}, {s.auroc_high:.3f}]")
                + f" (H: {s.auroc_h:.3f})"
            )
        lines += [f"  ⚠ {w}" for w in verdict.warnings]
        lines.append("")
    return text_pages("Verdict", lines)


def summary_table(runs: list[tuple[dict, pd.DataFrame]]) -> list[Figure]:
    header = (
        f"{'run':<34}{'step':>6}{'H valid':>9}{'H online':>10}{'AUROC H':>9}{'AUROC σ':>9}"
        f"{'Σlogσ gap':>11}{'best σ (step)':>15}{'success':>9}"
    )
    lines = [header, "-" * len(header)]
    for meta, table in runs:
        last_step = table.step.max()
        last = table[table.step == last_step]
        online_all = table[table.split == "online"]
        mean = lambda split, col, last=last: last[last.split == split][col].mean()
        by_step = online_all.groupby("step").auroc_gauss_valid.mean()
        label = figures.run_label(meta)[:33]
        lines.append(
            f"{label:<34}{int(last_step):>6}{mean('valid', 'entropy'):>9.2f}"
            f"{mean('online', 'entropy'):>10.2f}{mean('online', 'auroc_valid'):>9.3f}"
            f"{mean('online', 'auroc_gauss_valid'):>9.3f}{mean('online', 'gap_gauss_valid'):>+11.2f}"
            f"{by_step.max():>9.3f} ({int(by_step.idxmax()):>4}){mean('online', 'success_rate'):>8.0%}"
        )
    lines += ["", "Per seed at the last step (gaps online − held-out, 95 % cluster-bootstrap CI):", ""]
    for meta, table in runs:
        last = table[(table.step == table.step.max()) & (table.split == "online")]
        for r in last.itertuples():
            lines.append(
                f"  {figures.run_label(meta)[:40]:<41} seed {r.seed}: Σ log σ gap {r.gap_gauss_valid:+.2f} "
                f"[{r.gap_gauss_valid_lo:+.2f}, {r.gap_gauss_valid_hi:+.2f}], AUROC σ {r.auroc_gauss_valid:.3f}; "
                f"H gap {r.gap_valid:+.2f} [{r.gap_valid_lo:+.2f}, {r.gap_valid_hi:+.2f}], AUROC H {r.auroc_valid:.3f}"
            )
    lines += [
        "",
        "Columns: mean over seeds at the last step, online vs held-out expert states.  AUROC H: scored by the sampled",
        "entropy H(s); AUROC σ and Σlogσ gap: by the variance-only Gaussian entropy Σ log σ(s), the measure the",
        "verdict rests on; 'best σ' = the highest seed-mean AUROC σ over all steps.  NaN CI: one held-out episode.",
    ]
    return text_pages("Summary", lines, mono=True)


def load_sweep(sweep_dir: Path) -> tuple[dict, list[tuple[dict, pd.DataFrame]]]:
    """sweep.json and its finished runs, each labelled by its cell (a random subset's --input is unreadable)."""
    meta = read_json_file(sweep_dir / "sweep.json", "rerun the sweep's command into another --out")
    meta["path"] = str(sweep_dir)
    runs = []
    for cell in meta.get("cells", []):
        run_dir = sweep_dir / "runs" / cell["label"]
        if (run_dir / "entropy.parquet").exists():
            run_meta, table = load_run(run_dir)
            run_meta["label"] = cell["label"]
            runs.append((run_meta, table.assign(cell=cell["label"], **cell.get("columns", {}))))
    if not runs:
        raise UserError(f"{sweep_dir} has no finished run yet; let the sweep finish a point first")
    return meta, runs


def build_report(run_dirs: list[str | os.PathLike], out: str | os.PathLike) -> ReportSummary:
    """Write ``out`` (PDF) and ``<out stem>_<figure>.png`` beside it, from run and sweep directories."""
    if not run_dirs:
        raise UserError("give at least one run directory, e.g. csil-diag report runs/lift-lowdim")
    out = check_output_file(out)
    from csil_diag.report import rl

    runs, sweeps, trains, objects = [], [], [], []
    dirs = []
    for d in map(Path, run_dirs):  # a directory of sweeps and probes (a collapse hunt) stands for its members
        plain = any((d / name).exists() for name in ("config.json", "sweep.json", "object_probe.parquet"))
        dirs += [d] if plain or rl.is_train_run(d) else (hunt_members(d) or [d])
    for d in dirs:
        if (d / "object_probe.parquet").exists():
            meta = read_json_file(d / "probe.json", "rerun `csil-diag probe object`")
            objects.append((meta, read_parquet_file(d / "object_probe.parquet", "rerun `csil-diag probe object`")))
        elif (d / "sweep.json").exists():
            sweep, cells = load_sweep(d)
            sweeps.append((sweep, cells))
            runs += cells
        elif rl.is_train_run(d):
            trains.append(rl.load_train_run(d))
        else:
            runs.append(load_run(d))
    out.parent.mkdir(parents=True, exist_ok=True)
    pages: list[tuple[str, Figure]] = []
    if runs:
        pages += [("cover", f) for f in cover_page(runs, [s for s, _ in sweeps])]
        pages += [("verdict", f) for f in verdict_page(runs)]
    for number, (sweep, cells) in enumerate(sweeps):
        audit = Path(sweep["path"]) / "audit.json"
        if audit.exists():
            pages += [("audit", f) for f in audit_page(read_json_file(audit, "rerun `csil-diag compare` with --base"))]
        if sweep.get("kind") == "sweep":
            pages += [(f"settings{number}", f) for f in settings_page(sweep, cells)]
    for number, (paths, frame) in enumerate(remedy_rows(sweeps)):
        pages += [(f"remedies{number}", f) for f in remedies_page(paths, frame)]
    hunt = hunt_rows(sweeps, objects)
    if len(hunt) > 1:
        pages.append(("hunt", hunt_figure(hunt)))
        pages += [("hunt_table", f) for f in hunt_table(hunt)]
    tables = []
    for number, (paths, summary) in enumerate(width_groups(sweeps)):
        table = separation_by_width(summary)
        pages.append((f"widths{number}", figures.width_headline(table, paths)))
        tables.append((out.with_name(f"{out.stem}_widths{number}.csv"), table))  # the page's numbers
    if runs:
        pages += [
            ("overlay", figures.comparison_overlay(runs)),
            ("entropy", figures.entropy_curves(runs, "entropy")),
            ("gaussian_entropy", figures.entropy_curves(runs, "gaussian_entropy")),
            ("separation", figures.separation_curves(runs)),
            ("per_dimension", figures.per_dimension(runs)),
            ("success", figures.success_curves(runs)),
        ]
        pages += [("summary", f) for f in summary_table(runs)]
        probe_files = [(meta, Path(meta["run_dir"]) / "probes" / "trunk.parquet") for meta, _ in runs]
        probes = [(m, read_parquet_file(f, "rerun `csil-diag probe trunk`")) for m, f in probe_files if f.exists()]
        if probes:
            pages.append(("trunk_probe", figures.trunk_probe_page(probes)))
        for number, (meta, _) in enumerate(runs):
            for path in sorted((Path(meta["run_dir"]) / "projections").glob("*.parquet")):
                frame = read_parquet_file(path, "rerun `csil-diag project`")
                for colour in ("split", "t", "success"):
                    pages.append(
                        (f"projection{number}_{path.stem}_{colour}", figures.projection_page(meta, frame, colour))
                    )
    if objects:
        pages.append(("object_probe", figures.object_probe_page(objects)))
    if trains:
        pages += [("cover", f) for f in text_pages("CSIL / SACfD training runs", rl.summary_lines(trains))]
        pages += [
            ("rl_success", rl.success_page(trains)),
            ("rl_entropy", rl.entropy_page(trains)),
            ("rl_reward", rl.reward_page(trains)),
        ]
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    pngs = []
    try:
        with PdfPages(
            tmp, metadata={"Title": "csil-diag stationarity analysis", "Creator": f"csil-diag {__version__}"}
        ) as pdf:
            for name, fig in pages:
                pdf.savefig(fig)
                if name not in ("cover", "verdict", "summary", "hunt_table"):
                    png = out.with_name(f"{out.stem}_{name}.png")
                    fig.savefig(png, bbox_inches="tight")
                    pngs.append(png)
                plt.close(fig)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    for path, table in tables:
        atomic_write_bytes(path, table.to_csv(index=False, float_format="%.4f").encode())
    return ReportSummary(out, pngs, len(pages), [path for path, _ in tables])
