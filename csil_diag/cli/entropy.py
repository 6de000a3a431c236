"""`csil-diag entropy`, and the entropy run's options, declared once for entropy, slice-sweep, compare and sweep."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from csil_diag.cli.common import default_workers, exit_on_interrupt, given, parse_seeds
from csil_diag.envs.tasks import TASK_CHOICES
from csil_diag.ui import console
from csil_diag.ui import count_bar as _count_bar
from csil_diag.ui import make_progress as _progress

# The entropy run's options, declared once for entropy, slice-sweep and compare.
OptPreset = Annotated[str | None, typer.Option(help="quick (minutes on 2 cores) | thesis (5k steps, 25 rollouts)")]
OptSteps = Annotated[int | None, typer.Option(help="BC steps [20000; quick 1000; thesis 5000]")]
OptEvery = Annotated[int | None, typer.Option(help="evaluate every this many steps [2000; quick 250; thesis 1000]")]
OptInitialPoint = Annotated[
    bool | None,
    typer.Option(
        "--initial-point/--no-initial-point",
        help="also evaluate the untrained HetStat at step 0 (the default); --no-initial-point halves a sweep that "
        "only needs the last point (training is unchanged)",
    ),
]
OptEpisodes = Annotated[
    int | None, typer.Option(help="stochastic rollouts per point (online states) [10; quick 4; thesis 25]")
]
OptEvalEpisodes = Annotated[
    int | None, typer.Option(help="deterministic rollouts per point (success rate) [10; quick 4; thesis 25]")
]
OptSeeds = Annotated[str | None, typer.Option(help="comma-separated seeds [0,1,2; quick 0]")]
OptK = Annotated[int | None, typer.Option("--k", help="samples per state for the entropy estimate [32; quick 16]")]
OptLr = Annotated[float | None, typer.Option(help="AdamW learning rate [1e-4]")]
OptBatchSize = Annotated[int | None, typer.Option(help="BC batch size [256]")]
OptCovariance = Annotated[str | None, typer.Option(help="full (faithful, default) | diagonal (speed studies only)")]
OptActivation = Annotated[str | None, typer.Option(help="periodic_relu (default) | triangle | sin_cos")]
OptTrunk = Annotated[str | None, typer.Option(help="HetStat trunk: plain (default) | spectral (remedy: SNGP-style)")]
OptSpectralBound = Annotated[float | None, typer.Option(help="spectral trunk: bound on each layer's norm [0.95]")]
OptInputTransform = Annotated[
    str | None, typer.Option(help="remedy: none (default) | pca:K | whiten | whiten:K, fitted on the training demos")
]
OptLengthscaleInit = Annotated[float | None, typer.Option(help="random features' initial log inverse lengthscale [-5]")]
OptLearnLengthscale = Annotated[
    bool | None,
    typer.Option("--learn-lengthscale/--fixed-lengthscale", help="remedy: keep lengthscales at their init [learn]"),
]
OptRfSkip = Annotated[
    bool | None, typer.Option("--rf-skip/--no-rf-skip", help="remedy: half the random features read the input [no]")
]
OptHead = Annotated[
    str | None,
    typer.Option(help="remedy: learned (default) | posterior: the Bayesian posterior covariance at every point"),
]
OptStdFloor = Annotated[float | None, typer.Option(help="floor on the per-feature std used to normalise inputs [0.01]")]
OptCheckpoints = Annotated[str | None, typer.Option(help="every (params at every point) | last  [every; quick last]")]
OptSite = Annotated[str, typer.Option(help="π0 embedding site: state | actions | prefix")]


def entropy_config(
    task: str,
    input: str,
    demos: Path,
    preset: str | None,
    *,
    steps: int | None = None,
    every: int | None = None,
    initial_point: bool | None = None,
    episodes: int | None = None,
    eval_episodes: int | None = None,
    seeds: str | None = None,
    k: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    covariance: str | None = None,
    activation: str | None = None,
    trunk: str | None = None,
    spectral_bound: float | None = None,
    input_transform: str | None = None,
    lengthscale_init: float | None = None,
    learn_lengthscale: bool | None = None,
    rf_skip: bool | None = None,
    head: str | None = None,
    std_floor: float | None = None,
    checkpoints: str | None = None,
    model: Path | None = None,
    mode: str | None = None,
    site: str = "state",
    replan: int = 1,
) -> Any:
    """The entropy run's config from the command line: the preset, then every option given explicitly."""
    from dataclasses import replace

    from csil_diag.config import apply_preset
    from csil_diag.diag.entropy_run import EntropyConfig, default_mode

    config = apply_preset(EntropyConfig(task=task, input=input, demos=str(demos)), preset)
    # Checked in this order (seeds, the input spec, then the HetStat's fields, then BC's): the first bad option named.
    top = given(
        steps=steps,
        every=every,
        initial_point=initial_point,
        episodes=episodes,
        eval_episodes=eval_episodes,
        k_samples=k,
        std_floor=std_floor,
        checkpoints=checkpoints,
        seeds=parse_seeds(seeds) if seeds is not None else None,
        model=str(model) if model is not None else None,
        site=site,
        replan=replan,
    )
    bc = given(learning_rate=lr, batch_size=batch_size, mode=mode or default_mode(input))
    hetstat = replace(
        config.hetstat,
        **given(
            covariance=covariance,
            activation=activation,
            trunk=trunk,
            spectral_bound=spectral_bound,
            input_transform=input_transform,
            log_lengthscale_init=lengthscale_init,
            learn_lengthscale=learn_lengthscale,
            rf_skip=rf_skip,
            head=head,
        ),
    )
    return replace(config, **top, hetstat=hetstat, bc=replace(config.bc, **bc))


def entropy(
    task: str = typer.Option(..., help=TASK_CHOICES),
    input: str = typer.Option("joints+object", "--input", help="feature spec, e.g. joints+object, eef+object[:3]"),
    demos: Path = typer.Option(..., help="robomimic HDF5 with mask/train and mask/valid"),
    out: Path = typer.Option(..., help="run directory (re-running resumes it)"),
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
    workers: int = typer.Option(0, help="env worker processes (0: one per core)"),
    model: Path = typer.Option(None, help="π0 checkpoint for pi0 / residual modes (default: the embedded tiny model)"),
    mode: str = typer.Option(None, help="head, residual or ensemble on the VLA action (default: residual with pi0)"),
    site: OptSite = "state",
    replan: int = typer.Option(1, help="online: query π0 every this many steps (reusing its chunk)"),
) -> None:
    """Online vs expert action entropy during BC pre-training of a HetStat (thesis Fig. 6.4)."""
    from csil_diag.diag.entropy_run import EntropyRun

    config = entropy_config(
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
        replan=replan,
    )
    with EntropyRun(config, out, default_workers(workers), on_embed=_count_bar("π0 embeddings of the demos")) as run:
        table = _run_entropy(run, out)
    _print_entropy_summary(table, run.config, out)


def _run_entropy(run: Any, out: Path) -> Any:
    config = run.load().config  # with the VLA model resolved
    points = config.points
    total = len(points) * len(config.seeds)
    # Points a resumed run already has start the bar, so that the ETA counts only the points computed now.
    done = {(s, p) for s in config.seeds for p in points if run.point_path(s, p).exists()}
    with _progress() as progress:
        bar = progress.add_task("entropy", total=total, completed=len(done), status="")

        def on_event(event: str, seed: int, step: int) -> None:
            if event == "done":
                done.add((seed, step))
                progress.update(bar, completed=len(done))
            status = {
                "train": f"seed {seed}: BC step {step}",
                "evaluate": f"seed {seed}: evaluating step {step}",
                "done": f"seed {seed}: step {step} done",
            }[event]
            progress.update(bar, status=status)

        with exit_on_interrupt(f"finished points are kept in {out}; rerun the same command to resume", progress):
            table = run.run(on_event)
    return table


def _ci(lo: float, hi: float) -> str:
    """' [lo, hi]', or a note where a single rollout episode leaves nothing to bootstrap."""
    return " [one episode: no CI]" if math.isnan(lo) or math.isnan(hi) else f" [{lo:+.2f}, {hi:+.2f}]"


def _print_entropy_summary(table: Any, config: Any, out: Path) -> None:
    from csil_diag.config import remedy_label
    from csil_diag.diag.verdict import final_point, held_out_demos, run_verdict

    remedies = remedy_label(config.hetstat)
    title = (
        f"{config.task} · {config.input} · mode {config.bc.mode} · {config.hetstat.covariance} covariance"
        f"{' · ' + remedies if remedies else ''}"
        f" · step {int(table.step.max())}"
        f" · K={config.k_samples}"
    )
    summary = Table(
        "seed",
        "H valid / online",
        "AUROC H",
        "AUROC Σlogσ",
        "Σlogσ gap vs valid [95 % CI]",
        "H gap vs valid [95 % CI]",
        "success",
        title=title,
    )
    for on in final_point(table).itertuples():
        summary.add_row(
            str(on.seed),
            f"{on.valid_entropy:.2f} / {on.entropy:.2f}",
            f"{on.auroc_valid:.3f}",
            f"{on.auroc_gauss_valid:.3f}",
            f"{on.gap_gauss_valid:+.2f}" + _ci(on.gap_gauss_valid_lo, on.gap_gauss_valid_hi),
            f"{on.gap_valid:+.2f}" + _ci(on.gap_valid_lo, on.gap_valid_hi),
            "—" if math.isnan(on.success_rate) else f"{on.success_rate:.0%}",  # --eval-episodes 0
        )
    console.print(summary)
    verdict = run_verdict(table, config.episodes, held_out_demos(table))
    console.print(f"verdict (variance-only measure Σ log σ): {verdict.sentence}")
    for warning in verdict.warnings:
        console.print(f"  warning: {warning}")
    console.print(f"wrote {out}/entropy.parquet ({len(table)} rows), {out}/config.json, checkpoints/ and states/")
