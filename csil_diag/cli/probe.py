"""`csil-diag probe trunk`, `probe object` and `project`: instruments on entropy runs and on π0's embedding."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from csil_diag.cli.common import split_csv
from csil_diag.envs.tasks import TASK_CHOICES
from csil_diag.errors import UserError
from csil_diag.ui import console
from csil_diag.ui import count_bar as _count_bar

probe_app = typer.Typer(
    help="Instruments that locate where the online/expert distinction is lost.", pretty_exceptions_enable=False
)


@probe_app.command("trunk")
def probe_trunk(
    runs: list[Path] = typer.Argument(..., help="entropy run directories (their online states and checkpoints)"),
    steps: str = typer.Option("first,last", help="first,last | all: the BC steps to probe (those with parameters)"),
) -> None:
    """Distance to the nearest training-demo state in the input, the trunk's bottleneck and the random features, and how
    well each separates online from held-out expert states (AUROC), then the head's Σ log σ on the same states: is
    separation lost in the input, the trunk or the head?"""
    from csil_diag.diag.trunk_probe import probe_run, reading

    for run_dir in runs:
        frame, notes = probe_run(run_dir, steps)
        t = Table(
            "seed",
            "step",
            "space",
            "width",
            "AUROC [95 % CI]",
            "online / held-out: distance to the demos (head σ: Σ log σ + c)",
            title=str(run_dir),
        )
        for r in frame.itertuples():
            ci = "" if math.isnan(r.auroc_lo) else f" [{r.auroc_lo:.2f}, {r.auroc_hi:.2f}]"
            t.add_row(
                str(r.seed),
                str(r.step),
                r.space,
                str(r.width),
                f"{r.auroc:.3f}{ci}",
                f"{r.online_distance:.3g} / {r.valid_distance:.3g}",
            )
        console.print(t)
        for note in notes:
            console.print(f"note: {note}")
        console.print(f"{run_dir}: {reading(frame)}")
        console.print(f"wrote {Path(run_dir) / 'probes' / 'trunk.parquet'}")


@probe_app.command("object")
def probe_object(
    task: str = typer.Option(..., help=TASK_CHOICES),
    demos: Path = typer.Option(..., help="robomimic HDF5 with MuJoCo states (start states of the probe)"),
    out: Path = typer.Option(..., help="directory for object_probe.parquet and probe.json"),
    model: Path = typer.Option(None, help="π0 checkpoint (default: the embedded tiny model)"),
    sites: str = typer.Option("state,actions,prefix", help="π0 embedding sites to probe"),
    n: int = typer.Option(50, "--n", help="start states (the first n demos' first states)"),
    seed: int = typer.Option(0, help="seed of the shift directions"),
) -> None:
    """Move the object (1, 2, 5 cm, 30° yaw) and, separately, the robot (the same shifts) from demo start states; how
    far does each move π0's embedding, relative to its spread over the demos? (The thesis' guess: π0 sees the robot.)"""
    import json

    from csil_diag.diag.object_probe import PERTURBATIONS
    from csil_diag.diag.object_probe_run import ObjectProbeConfig, run_object_probe
    from csil_diag.vla.pi0 import EMBEDDING_SITES

    chosen = split_csv(sites)
    bad = [s for s in chosen if s not in EMBEDDING_SITES]
    if bad or not chosen:
        raise UserError(f"--sites takes {', '.join(EMBEDDING_SITES)} (got {sites!r})")
    config = ObjectProbeConfig(
        task=task, demos=str(demos), sites=chosen, n=n, seed=seed, model=str(model) if model is not None else None
    )
    result = run_object_probe(config, out, on_progress=_count_bar("probe states"))
    table = result.table
    names = list(dict.fromkeys(table.embedding))
    t = Table(
        "perturbation", *names, title=f"sensitivity ‖Δ‖ / spread over demo states (mean ± std) — {result.model_dir}"
    )
    for p in PERTURBATIONS:
        part = table[table.perturbation == p.label].set_index("embedding")
        t.add_row(p.label, *[f"{part.sensitivity[e]:.3f} ± {part.sensitivity_std[e]:.3f}" for e in names])
    console.print(t)
    for r in result.ratios.itertuples():
        console.print(f"{r.embedding}: object / robot at {r.size * 100:.0f} cm = {r.object_over_robot:.2f}")
    seconds = json.dumps(result.meta["seconds"])
    console.print(f"wrote {result.table_path} and {result.meta_path} ({seconds} s)")


def project(
    runs: list[Path] = typer.Argument(..., help="entropy run directories (their online states and checkpoints)"),
    method: str = typer.Option("pca", help="pca | umap | tsne"),
    steps: str = typer.Option("first,last", help="first,last | all: the BC steps to project (those with parameters)"),
    max_states: int = typer.Option(20000, help="states in all (subsampled evenly over steps and splits)"),
    seed: int = typer.Option(0, help="seed of the subsample and of the projection"),
) -> None:
    """2-d projections of expert and online states in the HetStat's input, bottleneck and random-feature spaces, one
    fit per space shared by all steps; `csil-diag report` then shows them coloured by split, time and success."""
    import time

    from csil_diag.diag.projections import project_run

    for run_dir in runs:
        start = time.perf_counter()
        frame = project_run(run_dir, method, steps, max_states, seed)
        counts = frame[frame.space == "input"].groupby(["step", "split"]).size()
        summary = ", ".join(f"step {s} {split} {n}" for (s, split), n in counts.items())
        console.print(
            f"{run_dir}: {method} of {len(frame) // 3} states ({summary}) in 3 spaces in "
            f"{time.perf_counter() - start:.1f} s; wrote {Path(run_dir) / 'projections' / (method + '.parquet')}"
        )
