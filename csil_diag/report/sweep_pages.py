"""The sweep pages of `csil-diag report`: the parameter audit, a grid's settings page, remedies × inputs, and the
slice sweeps' cells pooled into width headlines."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

from csil_diag.diag.verdict import mean_t_interval
from csil_diag.report.text_pages import text_pages

# Settings that change when a cell is evaluated or what it keeps, not what its last point measures.
_SCHEDULE_ONLY = ("every", "initial_point", "checkpoints")


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
    return text_pages("Parameter audit (vla diff)", lines, mono=True)


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
    return text_pages("Settings: separation and demo fit", lines, mono=True)


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
    return text_pages("Remedies × inputs: separation and demo fit", lines, mono=True)


def _is_baseline(settings: dict) -> bool:
    from csil_diag.config import REMEDY_DEFAULTS

    remedies = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("hetstat.")}
    return bool(remedies) and all(REMEDY_DEFAULTS.get(k, object()) == v for k, v in remedies.items())


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
