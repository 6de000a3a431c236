"""`csil-diag slice-sweep`, `compare` and `sweep`: the entropy diagnostic over a grid of runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from csil_diag.cli.common import exit_on_interrupt, split_csv
from csil_diag.cli.entropy import (
    OptActivation,
    OptBatchSize,
    OptCheckpoints,
    OptCovariance,
    OptEpisodes,
    OptEvalEpisodes,
    OptEvery,
    OptHead,
    OptInitialPoint,
    OptInputTransform,
    OptK,
    OptLearnLengthscale,
    OptLengthscaleInit,
    OptLr,
    OptPreset,
    OptRfSkip,
    OptSeeds,
    OptSite,
    OptSpectralBound,
    OptStdFloor,
    OptSteps,
    OptTrunk,
    entropy_config,
)
from csil_diag.envs.tasks import TASK_CHOICES
from csil_diag.ui import command_line, console
from csil_diag.ui import count_bar as _count_bar
from csil_diag.ui import make_progress as _progress

# The sweeps' options, declared once for slice-sweep and compare.
OptSweepDemos = Annotated[Path, typer.Option(help="robomimic HDF5 with camera images, mask/train and mask/valid")]
OptSweepOut = Annotated[Path, typer.Option(help="sweep directory (re-running resumes or extends it)")]
OptBackend = Annotated[str, typer.Option(help="local (a process pool on this machine) | ray")]
OptAddress = Annotated[
    str | None, typer.Option(help="Ray cluster address (ray backend; default: a new local instance)")
]
OptParallel = Annotated[int, typer.Option(help="concurrent runs (0: cores / --workers-per-run)")]
OptWorkersPerRun = Annotated[int, typer.Option(help="env worker processes per run")]


def slice_sweep(
    task: str = typer.Option(..., help=TASK_CHOICES),
    demos: OptSweepDemos = ...,
    out: OptSweepOut = ...,
    widths: str = typer.Option("0,16,64,256", help="embedding widths; 0 = the low-dim reference; 'all' = the site's"),
    object: str = typer.Option("with,without", "--object", help="with, without or with,without the oracle object"),
    select: str = typer.Option("leading", help="leading (first w dims) and/or random:R (R seeded subsets), comma-sep"),
    subset_seed: int = typer.Option(0, help="seed of the random subsets (recorded in each cell's --input)"),
    backend: OptBackend = "local",
    address: OptAddress = None,
    parallel: OptParallel = 0,
    workers_per_run: OptWorkersPerRun = 1,
    preset: OptPreset = None,
    steps: OptSteps = None,
    every: OptEvery = None,
    initial_point: OptInitialPoint = None,
    episodes: OptEpisodes = None,
    eval_episodes: OptEvalEpisodes = None,
    seeds: OptSeeds = None,
    k: OptK = None,
    lr: OptLr = None,
    batch_size: OptBatchSize = None,
    covariance: OptCovariance = None,
    activation: OptActivation = None,
    trunk: OptTrunk = None,
    spectral_bound: OptSpectralBound = None,
    input_transform: OptInputTransform = None,
    lengthscale_init: OptLengthscaleInit = None,
    learn_lengthscale: OptLearnLengthscale = None,
    rf_skip: OptRfSkip = None,
    head: OptHead = None,
    std_floor: OptStdFloor = None,
    checkpoints: OptCheckpoints = None,
    model: Path = typer.Option(None, help="π0 checkpoint (default: the embedded tiny model)"),
    mode: str = typer.Option("residual", help="residual | ensemble | head: the same in every cell, width 0 included"),
    site: OptSite = "state",
) -> None:
    """Thesis Fig. 6.5: the entropy diagnostic on growing parts of π0's embedding, with and without the object."""
    from csil_diag.diag.sweep import Sweep, parse_object, parse_select, parse_widths, slice_cells
    from csil_diag.vla.policy import checkpoint_site_width, resolve_model_dir

    base = entropy_config(
        task,
        "joints",  # each cell sets its own --input; the model is resolved below, once for all cells
        demos,
        preset,
        steps=steps,
        every=every,
        initial_point=initial_point,
        episodes=episodes,
        eval_episodes=eval_episodes,
        seeds=seeds,
        k=k,
        lr=lr,
        batch_size=batch_size,
        covariance=covariance,
        activation=activation,
        trunk=trunk,
        spectral_bound=spectral_bound,
        input_transform=input_transform,
        lengthscale_init=lengthscale_init,
        learn_lengthscale=learn_lengthscale,
        rf_skip=rf_skip,
        head=head,
        std_floor=std_floor,
        checkpoints=checkpoints,
        mode=mode,
        site=site,
        replan=1,
    )
    model_dir = resolve_model_dir(model)
    base = replace(base, model=str(model_dir))
    site_width = checkpoint_site_width(model_dir, site)
    selects = [parse_select(x) for x in split_csv(select)]
    cells = slice_cells(parse_widths(widths, site_width), parse_object(object), selects, site_width, "pi0", subset_seed)
    cells = [replace(c, model=str(model_dir)) for c in cells]
    sweep = Sweep(out, "slice-sweep", base, cells, command_line())
    _run_sweep(sweep, backend, parallel, workers_per_run, address)


def compare(
    models: str = typer.Option(
        ..., help="comma-separated π0 checkpoints (e.g. the full, lora, lora-frozen-vision fine-tunes)"
    ),
    demos: OptSweepDemos = ...,
    task: str = typer.Option(..., help=TASK_CHOICES),
    out: OptSweepOut = ...,
    labels: str = typer.Option(None, help="comma-separated names, one per model (default: the directory names)"),
    base: Path = typer.Option(None, help="the checkpoint they were fine-tuned from: stores the `vla diff` audit"),
    input: str = typer.Option("pi0+joints", "--input", help="the same feature spec for every model"),
    backend: OptBackend = "local",
    address: OptAddress = None,
    parallel: OptParallel = 0,
    workers_per_run: OptWorkersPerRun = 1,
    preset: OptPreset = None,
    steps: OptSteps = None,
    every: OptEvery = None,
    initial_point: OptInitialPoint = None,
    episodes: OptEpisodes = None,
    eval_episodes: OptEvalEpisodes = None,
    seeds: OptSeeds = None,
    k: OptK = None,
    lr: OptLr = None,
    mode: str = typer.Option(None, help="residual (default with pi0) | ensemble | head"),
    site: OptSite = "state",
) -> None:
    """Thesis Fig. 6.6: the same entropy diagnostic for several π0 checkpoints, identical settings and seeds."""
    from csil_diag.diag.sweep import Sweep, compare_cells, write_audit
    from csil_diag.vla.policy import checkpoint_site_width, resolve_model_dir

    base_config = entropy_config(
        task,
        input,
        demos,
        preset,
        steps=steps,
        every=every,
        initial_point=initial_point,
        episodes=episodes,
        eval_episodes=eval_episodes,
        seeds=seeds,
        k=k,
        lr=lr,
        mode=mode,
        site=site,
    )
    dirs = [resolve_model_dir(m) for m in split_csv(models)]
    names = list(split_csv(labels)) if labels else [d.name for d in dirs]
    widths = [checkpoint_site_width(d, site) for d in dirs]
    cells = compare_cells(dirs, names, input, widths)
    base_dir = resolve_model_dir(base) if base is not None else None
    sweep = Sweep(out, "compare", replace(base_config, model=None), cells, command_line())
    if base_dir is not None:
        write_audit(out, base_dir, dirs, names)
    _run_sweep(sweep, backend, parallel, workers_per_run, address)


def sweep_cmd(
    task: str = typer.Option(..., help=TASK_CHOICES),
    demos: OptSweepDemos = ...,
    out: OptSweepOut = ...,
    set_: list[str] = typer.Option(
        ..., "--set", help="KEY=V1,V2 (repeatable; the grid is their product), e.g. hetstat.trunk=plain,spectral"
    ),
    input: str = typer.Option("pi0+joints", "--input", help="feature spec of every cell (unless --set input=…)"),
    backend: OptBackend = "local",
    address: OptAddress = None,
    parallel: OptParallel = 0,
    workers_per_run: OptWorkersPerRun = 1,
    preset: OptPreset = None,
    steps: OptSteps = None,
    every: OptEvery = None,
    initial_point: OptInitialPoint = None,
    episodes: OptEpisodes = None,
    eval_episodes: OptEvalEpisodes = None,
    seeds: OptSeeds = None,
    k: OptK = None,
    lr: OptLr = None,
    batch_size: OptBatchSize = None,
    covariance: OptCovariance = None,
    activation: OptActivation = None,
    trunk: OptTrunk = None,
    spectral_bound: OptSpectralBound = None,
    input_transform: OptInputTransform = None,
    lengthscale_init: OptLengthscaleInit = None,
    learn_lengthscale: OptLearnLengthscale = None,
    rf_skip: OptRfSkip = None,
    head: OptHead = None,
    std_floor: OptStdFloor = None,
    checkpoints: OptCheckpoints = None,
    model: Path = typer.Option(None, help="π0 checkpoint (default: the embedded tiny model)"),
    mode: str = typer.Option(None, help="head, residual or ensemble (default: residual with pi0)"),
    site: OptSite = "state",
) -> None:
    """The entropy diagnostic over any grid of its settings (remedies × widths …); slice-sweep and compare are
    presets of it."""
    from csil_diag.diag.sweep import Sweep, apply_settings, grid_cells, parse_set

    base = entropy_config(
        task,
        input,
        demos,
        preset,
        steps=steps,
        every=every,
        initial_point=initial_point,
        episodes=episodes,
        eval_episodes=eval_episodes,
        seeds=seeds,
        k=k,
        lr=lr,
        batch_size=batch_size,
        covariance=covariance,
        activation=activation,
        trunk=trunk,
        spectral_bound=spectral_bound,
        input_transform=input_transform,
        lengthscale_init=lengthscale_init,
        learn_lengthscale=learn_lengthscale,
        rf_skip=rf_skip,
        head=head,
        std_floor=std_floor,
        checkpoints=checkpoints,
        model=model,
        mode=mode,
        site=site,
    )
    cells = [replace(c, model=base.model) for c in grid_cells(base.input, [parse_set(x) for x in set_])]
    for cell in cells:  # every combination is a valid run before anything starts
        apply_settings(replace(base, input=cell.input), cell.settings)
    _run_sweep(Sweep(out, "sweep", base, cells, command_line()), backend, parallel, workers_per_run, address)


def _run_sweep(sweep: Any, backend: str, parallel: int, workers_per_run: int, address: str | None) -> None:
    from csil_diag.procs import terminate_as_interrupt

    progress, bar = _progress(), {}

    def on_progress(done: int, total: int, status: str) -> None:
        if not bar:
            progress.start()
            # the first call's points were finished before (a resumed sweep): the bar starts there, not the ETA's rate
            bar["id"] = progress.add_task(f"sweep ({len(sweep.cells)} runs)", total=total, completed=done, status="")
        progress.update(bar["id"], completed=done, total=total, status=status)

    kept = f"finished points are kept in {sweep.path}; rerun the command to resume"
    options = {"backend": backend, "parallel": parallel, "workers_per_run": workers_per_run, "address": address}
    try:
        # SIGTERM (a scheduler, timeout) stops the runs like Ctrl-C
        with exit_on_interrupt(kept, progress), terminate_as_interrupt():
            result = sweep.run(**options, on_progress=on_progress, on_embed=_count_bar("π0 embeddings of the demos"))
    finally:
        progress.stop()
    _print_sweep_summary(result)


def _print_sweep_summary(result: Any) -> None:
    from csil_diag.diag.verdict import cell_verdicts

    table = Table("run", "seeds", "AUROC Σlogσ", "AUROC H", "verdict (Σ log σ)", title=f"sweep {result.path}")
    for r in cell_verdicts(result.summary).itertuples():
        table.add_row(r.cell, str(r.seeds), f"{r.auroc_gauss:.3f}", f"{r.auroc_h:.3f}", r.outcome)
    console.print(table)
    for label, message in result.failed.items():
        console.print(f"[red]refused[/red] {label}: {message}")
    console.print(
        f"{result.cells} runs in {result.seconds / 60:.1f} min, CPU utilisation {100 * result.cpu_utilisation:.0f} %; "
        f"wrote {result.path}/sweep.json, summary.parquet ({len(result.summary)} rows) and runs/"
    )
    if result.failed:
        raise typer.Exit(2)
