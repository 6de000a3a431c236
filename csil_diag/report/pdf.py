"""`csil-diag report`: a multi-page PDF (plus one PNG per figure) that reads only run directories."""

from __future__ import annotations

import json
import math
import os
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from csil_diag import __version__
from csil_diag.diag.verdict import Verdict, mean_t_interval, run_verdict, separation_by_width
from csil_diag.errors import UserError
from csil_diag.report import figures
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


LINES_PER_PAGE = 46


def _text_pages(title: str, lines: list[str], mono: bool = False) -> list[Figure]:
    """Landscape A4 pages of text; long lines are wrapped, never cut, and a long text continues on more pages."""
    width = 150 if mono else 125
    wrapped = [piece for line in lines for piece in (textwrap.wrap(line, width, subsequent_indent="      ") or [""])]
    chunks = [wrapped[i : i + LINES_PER_PAGE] for i in range(0, max(len(wrapped), 1), LINES_PER_PAGE)]
    figs = []
    for number, chunk in enumerate(chunks):
        fig = plt.figure(figsize=(11.69, 8.27))
        suffix = f" ({number + 1}/{len(chunks)})" if len(chunks) > 1 else ""
        fig.text(0.05, 0.95, title + suffix, fontsize=16, weight="bold", va="top")
        fig.text(
            0.05,
            0.90,
            "\n".join(chunk),
            fontsize=8 if mono else 9.5,
            va="top",
            family="monospace" if mono else None,
            linespacing=1.35,
        )
        figs.append(fig)
    return figs


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
    return _text_pages("Stationarity analysis of the HetStat residual", lines)


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
    return _text_pages("Verdict", lines)


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
    return _text_pages("Summary", lines, mono=True)


def audit_page(audit: dict) -> list[Figure]:
    """What each fine-tuning regime really changed: `vla diff` of every compared model against the base."""
    lines = [f"‖ΔW‖ / ‖W‖ per parameter group, each model against the base {audit['base']}", ""]
    models = audit["models"]
    groups = list(dict.fromkeys(g["group"] for diffs in models.values() for g in diffs))
    header = f"{'group':<44}" + "".join(f"{label[:22]:>24}" for label in models)
    lines += [header, "-" * len(header)]
    for group in groups:
        cells = []
        for diffs in models.values():
            found = [g for g in diffs if g["group"] == group]
            cells.append(f"{found[0]['relative']:>24.3f}" if found else f"{'—':>24}")
        lines.append(f"{group[:43]:<44}" + "".join(cells))
    lines += ["", "0.000: the group is bit-identical to the base (frozen by the regime)."]
    return _text_pages("Parameter audit (vla diff)", lines, mono=True)


def settings_page(sweep: dict, cells: list[tuple[dict, pd.DataFrame]]) -> list[Figure]:
    """A `csil-diag sweep` grid (remedies × widths …): separation and demo fit side by side, per cell at the last step,
    so that a setting that separates by fitting the demos worse shows as such."""
    settings = {c["label"]: c.get("settings", {}) for c in sweep.get("cells", [])}
    baseline = next((label for label, st in settings.items() if _is_baseline(st)), None)
    rows = [{"label": meta["label"], **_last_point(table)} for meta, table in cells]
    base = next((r for r in rows if r["label"] == baseline), None)
    header = f"{'cell':<44}{'seeds':>6}{'AUROC Σlogσ [95% CI]':>24}{'AUROC H':>9}{'NLL valid':>11}{'MSE valid':>11}"
    header += f"{'Δ MSE':>8}{'success':>9}"
    lines = [f"Sweep {sweep['path']}: {sweep['command']}", "", header, "-" * len(header)]
    for r in rows:
        (g, glo, ghi), (h, _, _) = r["auroc_gauss"], r["auroc_h"]
        delta = f"{100 * (r['mse'] / base['mse'] - 1):>+7.0f}%" if base and base["mse"] > 0 else f"{'—':>8}"
        lines.append(
            f"{r['label'][:43]:<44}{r['seeds']:>6}{g:>8.3f} [{glo:.2f}, {ghi:.2f}]{'':>2}{h:>9.3f}"
            f"{r['nll']:>11.3f}{r['mse']:>11.4f}{delta}{r['success']:>8.0%}"
        )
    lines += [
        "",
        "Last BC step, mean over seeds. AUROC Σlogσ: variance-only measure, online vs held-out expert states, with a",
        "95 % t-interval over seeds (none with one seed); AUROC H: the sampled entropy. NLL / MSE valid: the held-out",
        "demos' fit (composed action); Δ MSE: against the cell with every remedy off"
        + (f" ({baseline})." if baseline else " (none in this grid)."),
        "A setting whose AUROC rises while Δ MSE rises too separates by fitting the demos worse.",
    ]
    return _text_pages("Settings: separation and demo fit", lines, mono=True)


def _last_point(table: pd.DataFrame) -> dict:
    """A cell's separation and held-out demo fit at its last BC step, over seeds."""
    last = table[table.step == table.step.max()]
    online, valid = last[last.split == "online"], last[last.split == "valid"]
    return {
        "seeds": online.seed.nunique(),
        "auroc_gauss": mean_t_interval(online.auroc_gauss_valid.dropna()),
        "auroc_h": mean_t_interval(online.auroc_valid.dropna()),
        "nll": float(valid.demo_nll.mean()),
        "mse": float(valid.demo_mse.mean()),
        "success": float(online.success_rate.mean()),
    }


def _remedies_of(hetstat: dict) -> dict:
    """The HetStat settings a remedy changes (the options of issue 12 and the lengthscale's initial value) that differ
    from their defaults; {} is the baseline."""
    from csil_diag.config import REMEDY_DEFAULTS, HetStatConfig

    defaults = REMEDY_DEFAULTS | {"log_lengthscale_init": HetStatConfig().log_lengthscale_init}
    changed = {k: hetstat.get(k, v) for k, v in defaults.items() if hetstat.get(k, v) != v}
    if changed.get("trunk") != "spectral":
        changed.pop("spectral_bound", None)
    return changed


def remedy_rows(sweeps: list[tuple[dict, list[tuple[dict, pd.DataFrame]]]]) -> list[tuple[list[str], pd.DataFrame]]:
    """Every cell of the given sweeps (slice sweeps' cells are baselines) on one footing: one row per input and remedy
    set, with the held-out NLL and MSE relative to the same input's baseline, pooled across the sweeps that measured
    under the same settings otherwise (model, demos, steps, network…). Only pools with a remedy beside a baseline.
    Returns [(sweep paths, rows)]."""
    from csil_diag.config import REMEDY_DEFAULTS

    pools: dict[str, tuple[list[str], list[dict]]] = {}
    for sweep, cells in sweeps:
        shared = {k: v for k, v in sweep.get("shared", {}).items() if k not in (*_SCHEDULE_ONLY, "kind")}
        hetstat_shared = shared.pop("hetstat", {})
        by_label = {c["label"]: c for c in sweep.get("cells", [])}
        for meta, table in cells:
            cell = by_label.get(meta["label"], {})
            hetstat = hetstat_shared | {
                k.split(".", 1)[1]: v for k, v in cell.get("settings", {}).items() if k.startswith("hetstat.")
            }
            remedies = _remedies_of(hetstat)
            others = {k: v for k, v in cell.get("settings", {}).items() if not k.startswith("hetstat.")}
            network = {k: v for k, v in hetstat.items() if k not in (*REMEDY_DEFAULTS, "log_lengthscale_init")}
            key = json.dumps([shared, network, others, cell.get("model")], sort_keys=True, default=str)
            paths, rows = pools.setdefault(key, ([], []))
            if sweep["path"] not in paths:
                paths.append(sweep["path"])
            remedy = ", ".join(_remedy_name(k, v) for k, v in sorted(remedies.items())) or "baseline"
            spec = _full_width_spelled_once(cell.get("input", meta["label"]), (meta.get("vla") or {}).get("width"))
            rows.append({"input": spec, "remedy": remedy, **_last_point(table)})
    out = []
    for paths, rows in pools.values():
        frame = pd.DataFrame(rows).drop_duplicates(["input", "remedy"], keep="last")
        base = frame[frame.remedy == "baseline"].set_index("input")
        base_nll = frame.input.map(base.nll)
        frame["d_nll"] = (frame.nll - base_nll) / base_nll.abs()  # > 0: a worse (higher) NLL, whatever its sign
        frame["d_mse"] = frame.mse / frame.input.map(base.mse) - 1
        if (frame.remedy != "baseline").any() and frame.d_mse.notna().any() and (frame.remedy == "baseline").any():
            frame = frame.assign(_o=frame.input.map(_input_order), _b=frame.remedy != "baseline")
            out.append((paths, frame.sort_values(["_o", "_b"], kind="stable").drop(columns=["_o", "_b"])))
    return out


_REMEDY_NAMES = {
    "learn_lengthscale": {False: "fixed lengthscale"},
    "rf_skip": {True: "rf skip"},
    "head": {"posterior": "posterior head"},
}


def _remedy_name(key: str, value) -> str:
    if key == "log_lengthscale_init":
        return f"log-lengthscale {value:g}"
    return _REMEDY_NAMES.get(key, {}).get(value, f"{key}={value}")


def _input_order(spec: str) -> tuple[bool, int, str]:
    """Without the object first, then by π0 width (0 without π0, the whole site last)."""
    tokens = spec.split("+")
    width = next((int(t[5:-1]) for t in tokens if t.startswith("pi0[:") and t[5:-1].isdigit()), None)
    if width is None:
        width = 1 << 30 if "pi0" in tokens else 0
    return "object" in tokens, width, spec


def _full_width_spelled_once(spec: str, width: int | None) -> str:
    """pi0[:W] at the site's whole width W is pi0 (a slice sweep spells its full-width cell the long way)."""
    return "+".join("pi0" if width and token == f"pi0[:{width}]" else token for token in spec.split("+"))


def remedies_page(paths: list[str], frame: pd.DataFrame) -> list[Figure]:
    """Remedies × inputs (widths): separation beside the demo fit relative to the same input's baseline."""
    header = f"{'input':<24}{'remedy':<47}{'AUROC Σlogσ [95% CI]':>22}{'AUROC H':>9}{'NLL (Δ)':>17}{'MSE (Δ)':>17}"
    lines = ["Sweeps: " + ", ".join(paths), "", header, "-" * len(header)]
    for r in frame.itertuples():
        (g, glo, ghi), (h, _, _) = r.auroc_gauss, r.auroc_h
        d_nll = f"({100 * r.d_nll:+.1f}%)" if r.remedy != "baseline" and math.isfinite(r.d_nll) else ""
        d_mse = f"({100 * r.d_mse:+.1f}%)" if r.remedy != "baseline" and math.isfinite(r.d_mse) else ""
        ci = f"[{glo:.2f}, {ghi:.2f}]" if math.isfinite(glo) else "(1 seed)"
        lines.append(
            f"{r.input[:23]:<24}{r.remedy[:46]:<47}{g:>8.3f} {ci:<13}{h:>9.3f}"
            f"{r.nll:>8.2f} {d_nll:<8}{r.mse:>8.4f} {d_mse:<8}"
        )
    lines += [
        "",
        "Last BC step, mean over seeds; every cell of the sweeps above, measured under the same settings but the",
        "remedy. Δ: against the same input's baseline (every remedy off); NLL Δ > 0 is a worse held-out fit. A remedy",
        "whose AUROC rises only with a worse NLL or MSE separates by fitting the demos worse.",
    ]
    return _text_pages("Remedies × inputs: separation and demo fit", lines, mono=True)


def _is_baseline(settings: dict) -> bool:
    from csil_diag.config import REMEDY_DEFAULTS

    remedies = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("hetstat.")}
    return bool(remedies) and all(REMEDY_DEFAULTS.get(k, object()) == v for k, v in remedies.items())


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


# Settings that change when a cell is evaluated or what it keeps, not what its last point measures.
_SCHEDULE_ONLY = ("every", "initial_point", "checkpoints")


@dataclass
class _WidthGroup:
    key: str  # the shared settings but the schedule, and the models
    paths: list[str] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    tables: list[pd.DataFrame] = field(default_factory=list)


def width_groups(sweeps: list[tuple[dict, list[tuple[dict, pd.DataFrame]]]]) -> list[tuple[list[str], pd.DataFrame]]:
    """The slice sweeps' cells pooled into one Fig. 6.5 headline per set of sweeps that complement each other.

    Sweeps pool when their shared settings differ only in the evaluation schedule (e.g. leading cells evaluated
    every 250 steps, random subsets added at the last step only) and they have no cell in common (a cell measured
    twice would count its seeds twice). Any other difference (steps, demos, model, …) keeps its own page, so a
    headline never pools unlike measurements. Returns [(sweep paths, pooled cells)]."""
    groups: list[_WidthGroup] = []
    for sweep, cells in sweeps:
        if not any("width" in t.columns for _, t in cells):
            continue
        shared = {k: v for k, v in sweep.get("shared", {}).items() if k not in _SCHEDULE_ONLY}
        models = sorted({str(c.get("model")) for c in sweep.get("cells", [])})
        key = json.dumps([shared, models], sort_keys=True, default=str) if shared else sweep["path"]
        labels = {str(label) for _, t in cells for label in t.cell.unique()}
        group = next((g for g in groups if g.key == key and not g.labels & labels), None)
        if group is None:
            group = _WidthGroup(key)
            groups.append(group)
        group.paths.append(sweep["path"])
        group.labels.update(labels)
        group.tables.extend(t for _, t in cells)
    return [(g.paths, pd.concat(g.tables, ignore_index=True)) for g in groups]


def build_report(run_dirs: list[str | os.PathLike], out: str | os.PathLike) -> ReportSummary:
    """Write ``out`` (PDF) and ``<out stem>_<figure>.png`` beside it, from run and sweep directories."""
    if not run_dirs:
        raise UserError("give at least one run directory, e.g. csil-diag report runs/lift-lowdim")
    out = check_output_file(out)
    from csil_diag.report import rl

    runs, sweeps, trains, objects = [], [], [], []
    for d in map(Path, run_dirs):
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
        pages += [("cover", f) for f in _text_pages("CSIL / SACfD training runs", rl.summary_lines(trains))]
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
                if name not in ("cover", "verdict", "summary"):
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
