"""The `csil-diag` command line: parses, validates, dispatches. No science here."""

from __future__ import annotations

import inspect
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from csil_diag.envs.tasks import TASK_CHOICES
from csil_diag.errors import UserError
from csil_diag.ui import command_line, console
from csil_diag.ui import count_bar as _count_bar
from csil_diag.ui import make_progress as _progress

app = typer.Typer(
    help="CSIL-residual training and stationarity diagnostics for HetStat policies on VLA embeddings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
demos_app = typer.Typer(help="Scripted demonstrations in robomimic's HDF5 layout.", pretty_exceptions_enable=False)
app.add_typer(demos_app, name="demos")
probe_app = typer.Typer(
    help="Instruments that locate where the online/expert distinction is lost.", pretty_exceptions_enable=False
)
app.add_typer(probe_app, name="probe")


def _register_vla() -> None:
    from csil_diag.vla.cli import vla_app

    app.add_typer(
        vla_app,
        name="vla",
        help="π0 in flax: pretrain / finetune (full, lora, lora-frozen-vision), eval, diff, openpi checkpoints, "
        "fixtures, parameter trees, bench.",
    )


_register_vla()


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


def _seeds(value: str, option: str = "--seeds") -> tuple[int, ...]:
    """'0,1,2' → (0, 1, 2); anything else is a one-line error naming the option."""
    try:
        seeds = tuple(int(x) for x in _csv(value))
    except ValueError:
        raise UserError(f"{option} takes comma-separated non-negative integers such as 0,1,2 (got {value!r})") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"{option} takes comma-separated non-negative integers such as 0,1,2 (got {value!r})")
    return seeds


# ------------------------------------------------------------------------------------------ demos
@demos_app.callback(invoke_without_command=True)
def demos(
    ctx: typer.Context,
    task: str = typer.Option(None, help=f"{TASK_CHOICES}  [required]"),
    n: int = typer.Option(200, "--n", help="number of successful demos to write"),
    cameras: str = typer.Option("", help="comma-separated: agentview,wrist (none: low-dim only)"),
    image_size: int = typer.Option(84, help="camera image height = width, pixels"),
    noise: float = typer.Option(0.0, help="std of Gaussian noise on the expert's arm actions"),
    speed_jitter: float = typer.Option(0.0, help="per-episode expert speed variation, ± fraction"),
    seed: int = typer.Option(0, help="base seed (attempt i uses a seed derived from it)"),
    valid_fraction: float = typer.Option(0.1, help="fraction of demos in mask/valid"),
    workers: int = typer.Option(0, help="worker processes (0: one per core)"),
    out: Path = typer.Option(None, help="output HDF5 (robomimic layout)  [required]"),
) -> None:
    """Generate expert demos: `csil-diag demos --task can --n 200 --out data/can.hdf5`."""
    if ctx.invoked_subcommand is not None:
        return
    if task is None or out is None:
        raise UserError("csil-diag demos needs --task and --out (or a subcommand: info, replay)")
    from csil_diag.data.demos import DemoConfig, generate_demos
    from csil_diag.procs import terminate_as_interrupt

    config = DemoConfig(
        task=task,
        n=n,
        cameras=_csv(cameras),
        image_size=image_size,
        noise=noise,
        speed_jitter=speed_jitter,
        seed=seed,
        valid_fraction=valid_fraction,
    )
    workers = workers or min(os.cpu_count() or 1, n)
    progress, bars = _progress(), {}

    def update(have: int, attempts: int, steps: int) -> None:
        if not bars:  # start drawing only once the output is known to be writable
            progress.start()
            bars["demos"] = progress.add_task(f"{task} demos", total=n, status="")
        rate = 100.0 * have / attempts if attempts else 0.0
        progress.update(bars["demos"], completed=have, status=f"{attempts} attempts ({rate:.0f} % ok)")

    try:
        with terminate_as_interrupt():  # SIGTERM (schedulers, timeout) keeps <out>.partial like Ctrl-C
            summary = generate_demos(config, out, workers=workers, on_progress=update)
    except KeyboardInterrupt:
        progress.stop()
        print(
            f"interrupted: finished demos are kept in {out}.partial; rerun the same command to resume",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    finally:
        progress.stop()
    size_mb = Path(out).stat().st_size / 2**20
    console.print(summary.line())
    console.print(
        f"wrote {out} ({size_mb:.1f} MiB): {summary.new_demos} new demos, {summary.steps} env steps "
        f"in {summary.seconds:.1f} s with {workers} worker(s)"
        + (f"; resumed from {summary.resumed_from}" if summary.resumed_from else "")
    )
    if summary.demos > n:
        console.print(
            f"note: {out} already held {summary.demos} demos, more than the {n} asked for; all are kept "
            "(a file is only ever extended; use another --out for a smaller one)"
        )


@demos_app.command("info")
def demos_info(path: Path = typer.Argument(..., help="robomimic HDF5 file")) -> None:
    """Summary table of a robomimic HDF5: demos, lengths, success, keys and shapes."""
    import numpy as np

    from csil_diag.data.robomimic import read_info

    info = read_info(path)
    lengths = np.asarray(info.lengths) if info.lengths else np.zeros(1)
    table = Table(title=str(path), show_header=False)
    table.add_row("env", f"{info.env_args.get('env_name')} (task {info.env_args.get('task', '?')})")
    table.add_row("demos", f"{len(info.demos)} ({', '.join(f'{k} {len(v)}' for k, v in info.masks.items())})")
    table.add_row("samples", str(info.total))
    table.add_row("length", f"min {lengths.min()}, mean {lengths.mean():.1f}, max {lengths.max()}")
    table.add_row("success", f"{sum(info.success)}/{len(info.success)}")
    gen = info.meta.get("generator")
    if gen:
        rate = info.meta.get("success_rate")
        table.add_row("generator", ", ".join(f"{k}={v}" for k, v in gen.items()))
        if rate is not None:
            table.add_row("expert", f"{info.meta.get('attempts')} attempts, {100 * rate:.1f} % success")
    console.print(table)
    keys = Table("obs key", "shape (per step)", "dtype", title="observations")
    for key, (shape, dtype) in info.obs_keys.items():
        keys.add_row(key, str(shape), dtype)
    console.print(keys)


@demos_app.command("replay")
def demos_replay(
    path: Path = typer.Argument(..., help="robomimic HDF5 file"),
    n: int = typer.Option(5, "--n", help="how many demos to replay (from the first)"),
) -> None:
    """Reset to each demo's states[0], replay its actions, and check that it succeeds again."""
    from csil_diag.data.replay import replay_demos
    from csil_diag.data.robomimic import read_info

    if n < 1:
        raise UserError(f"--n must be at least 1 (got {n}); it counts demos from the first")
    names = list(read_info(path).demos[:n])
    results = replay_demos(path, names)
    table = Table("demo", "steps", "recorded", "replayed", "max |Δobject|")
    for r in results:
        table.add_row(r.demo, str(r.steps), str(r.recorded_success), str(r.replay_success), f"{r.max_object_error:.2e}")
    console.print(table)
    ok = sum(r.replay_success == r.recorded_success for r in results)
    console.print(f"{ok}/{len(results)} replays reproduce the recorded outcome")
    if ok != len(results):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------- entropy
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


def _entropy_config(
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
):
    """The entropy run's config from the command line: the preset, then every option given explicitly."""
    from dataclasses import replace

    from csil_diag.config import BCConfig, HetStatConfig, apply_preset
    from csil_diag.diag.entropy_run import EntropyConfig, default_mode

    config = apply_preset(EntropyConfig(task=task, input=input, demos=str(demos)), preset)
    given = {
        "steps": steps,
        "every": every,
        "initial_point": initial_point,
        "episodes": episodes,
        "eval_episodes": eval_episodes,
        "k_samples": k,
        "std_floor": std_floor,
        "checkpoints": checkpoints,
        "seeds": _seeds(seeds) if seeds is not None else None,
        "model": str(model) if model is not None else None,
        "site": site,
        "replan": replan,
    }
    hetstat = {"covariance": covariance, "activation": activation, "trunk": trunk, "spectral_bound": spectral_bound}
    hetstat |= {"input_transform": input_transform, "log_lengthscale_init": lengthscale_init}
    hetstat |= {"learn_lengthscale": learn_lengthscale, "rf_skip": rf_skip, "head": head}
    bc = {"learning_rate": lr, "batch_size": batch_size, "mode": mode or default_mode(input)}
    return replace(
        config,
        **{k: v for k, v in given.items() if v is not None},
        hetstat=HetStatConfig(**{**config.hetstat.__dict__, **{k: v for k, v in hetstat.items() if v is not None}}),
        bc=BCConfig(**{**config.bc.__dict__, **{k: v for k, v in bc.items() if v is not None}}),
    )


_ENTROPY_OPTIONS = frozenset(inspect.signature(_entropy_config).parameters)  # what a command passes through


@app.command()
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

    config = _entropy_config(**{k: v for k, v in locals().items() if k in _ENTROPY_OPTIONS})
    workers = workers or (os.cpu_count() or 1)
    with EntropyRun(config, out, workers, on_embed=_count_bar("π0 embeddings of the demos")) as run:
        table = _run_entropy(run, out)
    _print_entropy_summary(table, run.config, out)


def _run_entropy(run, out: Path):
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

        try:
            table = run.run(on_event)
        except KeyboardInterrupt:
            progress.stop()
            print(
                f"interrupted: finished points are kept in {out}; rerun the same command to resume",
                file=sys.stderr,
            )
            raise typer.Exit(130) from None
    return table


def _ci(lo: float, hi: float) -> str:
    """' [lo, hi]', or a note where a single rollout episode leaves nothing to bootstrap."""
    return " [one episode: no CI]" if math.isnan(lo) or math.isnan(hi) else f" [{lo:+.2f}, {hi:+.2f}]"


def _print_entropy_summary(table, config, out: Path) -> None:
    from csil_diag.config import remedy_label

    last = table[table.step == table.step.max()]
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
    for seed, rows in last.groupby("seed"):
        by = {r.split: r for r in rows.itertuples()}
        on = by["online"]
        summary.add_row(
            str(seed),
            f"{by['valid'].entropy:.2f} / {on.entropy:.2f}",
            f"{on.auroc_valid:.3f}",
            f"{on.auroc_gauss_valid:.3f}",
            f"{on.gap_gauss_valid:+.2f}" + _ci(on.gap_gauss_valid_lo, on.gap_gauss_valid_hi),
            f"{on.gap_valid:+.2f}" + _ci(on.gap_valid_lo, on.gap_valid_hi),
            "—" if math.isnan(on.success_rate) else f"{on.success_rate:.0%}",  # --eval-episodes 0
        )
    console.print(summary)
    from csil_diag.diag.verdict import run_verdict

    verdict = run_verdict(table, config.episodes, int(table[table.split == "valid"].n_episodes.iloc[0]))
    console.print(f"verdict (variance-only measure Σ log σ): {verdict.sentence}")
    for warning in verdict.warnings:
        console.print(f"  warning: {warning}")
    console.print(f"wrote {out}/entropy.parquet ({len(table)} rows), {out}/config.json, checkpoints/ and states/")


# ------------------------------------------------------------------------------------------ sweeps
# The sweeps' options, declared once for slice-sweep and compare.
OptSweepDemos = Annotated[Path, typer.Option(help="robomimic HDF5 with camera images, mask/train and mask/valid")]
OptSweepOut = Annotated[Path, typer.Option(help="sweep directory (re-running resumes or extends it)")]
OptBackend = Annotated[str, typer.Option(help="local (a process pool on this machine) | ray")]
OptAddress = Annotated[
    str | None, typer.Option(help="Ray cluster address (ray backend; default: a new local instance)")
]
OptParallel = Annotated[int, typer.Option(help="concurrent runs (0: cores / --workers-per-run)")]
OptWorkersPerRun = Annotated[int, typer.Option(help="env worker processes per run")]


@app.command("slice-sweep")
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

    base = _entropy_config(
        **{k: v for k, v in locals().items() if k in _ENTROPY_OPTIONS and k != "model"}, input="joints", replan=1
    )
    model_dir = resolve_model_dir(model)
    base = replace(base, model=str(model_dir))
    site_width = checkpoint_site_width(model_dir, site)
    selects = [parse_select(x.strip()) for x in select.split(",") if x.strip()]
    cells = slice_cells(parse_widths(widths, site_width), parse_object(object), selects, site_width, "pi0", subset_seed)
    cells = [replace(c, model=str(model_dir)) for c in cells]
    sweep = Sweep(out, "slice-sweep", base, cells, command_line())
    _run_sweep(sweep, backend, parallel, workers_per_run, address)


@app.command()
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

    base_config = _entropy_config(**{k: v for k, v in locals().items() if k in _ENTROPY_OPTIONS and k != "model"})
    dirs = [resolve_model_dir(m) for m in _csv(models)]
    names = list(_csv(labels)) if labels else [d.name for d in dirs]
    widths = [checkpoint_site_width(d, site) for d in dirs]
    cells = compare_cells(dirs, names, input, widths)
    base_dir = resolve_model_dir(base) if base is not None else None
    sweep = Sweep(out, "compare", replace(base_config, model=None), cells, command_line())
    if base_dir is not None:
        write_audit(out, base_dir, dirs, names)
    _run_sweep(sweep, backend, parallel, workers_per_run, address)


@app.command("sweep")
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

    base = _entropy_config(**{k: v for k, v in locals().items() if k in _ENTROPY_OPTIONS})
    cells = [replace(c, model=base.model) for c in grid_cells(base.input, [parse_set(x) for x in set_])]
    for cell in cells:  # every combination is a valid run before anything starts
        apply_settings(replace(base, input=cell.input), cell.settings)
    _run_sweep(Sweep(out, "sweep", base, cells, command_line()), backend, parallel, workers_per_run, address)


def _run_sweep(sweep, backend: str, parallel: int, workers_per_run: int, address: str | None) -> None:
    from csil_diag.procs import terminate_as_interrupt

    progress, bar = _progress(), {}

    def on_progress(done: int, total: int, status: str) -> None:
        if not bar:
            progress.start()
            # the first call's points were finished before (a resumed sweep): the bar starts there, not the ETA's rate
            bar["id"] = progress.add_task(f"sweep ({len(sweep.cells)} runs)", total=total, completed=done, status="")
        progress.update(bar["id"], completed=done, total=total, status=status)

    options = {"backend": backend, "parallel": parallel, "workers_per_run": workers_per_run, "address": address}
    try:
        with terminate_as_interrupt():  # SIGTERM (a scheduler, timeout) stops the runs like Ctrl-C
            result = sweep.run(**options, on_progress=on_progress, on_embed=_count_bar("π0 embeddings of the demos"))
    except KeyboardInterrupt:
        progress.stop()
        print(f"interrupted: finished points are kept in {sweep.path}; rerun the command to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        progress.stop()
    _print_sweep_summary(result)


def _print_sweep_summary(result) -> None:
    from csil_diag.diag.verdict import run_verdict

    table = Table("run", "seeds", "AUROC Σlogσ", "AUROC H", "verdict (Σ log σ)", title=f"sweep {result.path}")
    summary = result.summary
    for label, rows in summary.groupby("cell", sort=False) if not summary.empty else []:
        last = rows[(rows.split == "online") & (rows.step == rows.step.max())]
        valid = rows[rows.split == "valid"]
        verdict = run_verdict(rows, int(last.n_episodes.iloc[0]), int(valid.n_episodes.iloc[0]))
        table.add_row(
            label,
            str(last.seed.nunique()),
            f"{last.auroc_gauss_valid.mean():.3f}",
            f"{last.auroc_valid.mean():.3f}",
            verdict.outcome,
        )
    console.print(table)
    for label, message in result.failed.items():
        console.print(f"[red]refused[/red] {label}: {message}")
    console.print(
        f"{result.cells} runs in {result.seconds / 60:.1f} min, CPU utilisation {100 * result.cpu_utilisation:.0f} %; "
        f"wrote {result.path}/sweep.json, summary.parquet ({len(summary)} rows) and runs/"
    )
    if result.failed:
        raise typer.Exit(2)


# ------------------------------------------------------------------------------------------ train
@app.command()
def train(
    task: str = typer.Option(..., help=TASK_CHOICES),
    demos: Path = typer.Option(..., help="robomimic HDF5 with mask/train and mask/valid"),
    out: Path = typer.Option(..., help="run directory (re-running resumes it from its last evaluation)"),
    algo: str = typer.Option("csil", help="csil (coherent reward, thesis Alg. 1) | sacfd (sparse reward + demos)"),
    input: str = typer.Option("joints+object", "--input", help="feature spec, e.g. joints+object, pi0+joints"),
    mode: str = typer.Option(None, help="head | residual | ensemble on π0's action (default: residual with pi0)"),
    model: Path = typer.Option(None, help="π0 checkpoint (default: the embedded tiny model) for pi0 inputs / modes"),
    preset: str = typer.Option(None, help="quick (256-wide nets, 20k steps) | thesis (App. B, 250k steps, 4 seeds)"),
    steps: int = typer.Option(
        None,
        help="environment steps of RL per seed [250000; quick 20000]; raised on an existing run, it continues the run "
        "(as if asked from the start) when the old budget is a multiple of --eval-every",
    ),
    eval_every: int = typer.Option(None, help="environment steps between evaluations [25000; quick 5000]"),
    eval_episodes: int = typer.Option(None, help="deterministic evaluation episodes [25; quick 10]"),
    entropy_episodes: int = typer.Option(None, help="stochastic episodes for online entropy [10; quick 4; 0: off]"),
    seeds: str = typer.Option(None, help="comma-separated seeds [0; thesis 0,1,2,3]"),
    bc_steps: int = typer.Option(None, help="csil: BC pre-training steps [5000; quick 2000]"),
    bc_lr: float = typer.Option(None, help="csil: BC learning rate [1e-4]"),
    critic_pretrain_steps: int = typer.Option(None, help="csil: critic pre-training steps [20000, App. B; quick too]"),
    utd: int = typer.Option(None, help="updates per environment step [1]"),
    reward_sign: str = typer.Option(None, help="csil: negative (App. B) | positive coherent reward"),
    reward_scale: float = typer.Option(None, help="csil: reward scale [0.16 (App. B)]"),
    demo_ratio: float = typer.Option(None, help="sacfd: demonstrations' share of each batch [0.2]"),
    entropy_coefficient: float = typer.Option(
        None, help="csil: fixed weight β of the actor's KL(π ‖ π_BC) and of the critic target's [0.01]"
    ),
    envs: int = typer.Option(None, help="environments stepped in parallel [4]"),
    workers: int = typer.Option(0, help="env worker processes (0: one per core, at most --envs)"),
    site: OptSite = "state",
    replan: int = typer.Option(1, help="query π0 every this many steps (executing its chunk in between)"),
) -> None:
    """CSIL (BC → coherent reward → critic pre-training → SAC with reward refinement) or SACfD, with success and the
    online-vs-expert entropy evaluated as it learns (thesis Figs. 6.1–6.3)."""
    from csil_diag.config import BCConfig, CSILConfig, apply_preset
    from csil_diag.csil.train_run import TrainConfig, TrainRun
    from csil_diag.diag.entropy_run import default_mode

    rl = {
        "algo": algo,
        "utd": utd,
        "reward_sign": reward_sign,
        "reward_scale": reward_scale,
        "demo_ratio": demo_ratio,
        "entropy_coefficient": entropy_coefficient,
        "critic_pretrain_steps": critic_pretrain_steps,
    }
    base = TrainConfig(task=task, input=input, demos=str(demos), rl=CSILConfig(algo=algo))
    config = apply_preset(base, preset)
    given = {
        "steps": steps,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "entropy_episodes": entropy_episodes,
        "seeds": _seeds(seeds) if seeds is not None else None,
        "bc_steps": bc_steps,
        "n_envs": envs,
        "model": str(model) if model is not None else None,
    }
    bc = {"learning_rate": bc_lr, "mode": mode or default_mode(input)}
    config = replace(
        config,
        **{k: v for k, v in given.items() if v is not None},
        site=site,
        replan=replan,
        bc=BCConfig(**{**config.bc.__dict__, **{k: v for k, v in bc.items() if v is not None}}),
        rl=CSILConfig(**{**config.rl.__dict__, **{k: v for k, v in rl.items() if v is not None}}),
    )
    workers = workers or min(os.cpu_count() or 1, config.n_envs)
    with TrainRun(config, out, workers) as run:
        run.load(_count_bar("π0 embeddings of the demos"))
        table = _run_train(run, out)
    _print_train_summary(table, run.config, out)


def _run_train(run, out: Path):
    config = run.config
    pre = config.bc_steps + config.rl.critic_pretrain_steps if config.rl.algo == "csil" else 0
    with _progress() as progress:
        bars: dict[str, int] = {}
        done_seeds: dict[int, dict[str, int]] = {}

        def show(status: str | None) -> None:
            """The bars, added at the first event that is not a resumed seed's: what resuming restores starts them,
            so that the ETA's rate counts only the work done now."""
            counts = {
                "pre": sum(min(s["pre"], pre) for s in done_seeds.values()),
                "rl": sum(min(s["rl"], config.steps) for s in done_seeds.values()),
            }
            if not bars:
                totals = {"pre": pre * len(config.seeds), "rl": config.steps * len(config.seeds)}
                names = {"pre": "pre-training", "rl": f"{config.rl.algo} env steps"}
                for key in ("pre", "rl") if pre else ("rl",):  # SACfD has no pre-training: no empty bar
                    bars[key] = progress.add_task(names[key], total=totals[key], completed=counts[key], status="")
            for key in bars:
                progress.update(bars[key], completed=counts[key])
            if status is not None:
                progress.update(bars["rl"], status=status)

        def on_event(event: str, info: dict) -> None:
            seed, status = info.get("seed"), None
            slot = done_seeds.setdefault(seed, {"pre": 0, "rl": 0})
            if event in ("bc", "resume_bc"):
                slot["pre"] = info["step"]
            elif event in ("critic", "resume_critic"):
                slot["pre"] = config.bc_steps + info["step"]
            elif event == "step":
                slot["rl"] = info["env_steps"]
            elif event in ("resume", "done"):
                slot["pre"], slot["rl"] = pre, info["env_steps"]
            elif event == "evaluated":
                slot["pre"] = pre
                status = f"seed {seed}: success {info['success_rate']:.2f} at {info['env_steps']} steps"
            elif event == "evaluate":
                status = f"seed {seed}: evaluating"
            if bars or event not in ("resume", "done", "resume_bc", "resume_critic"):
                show(status)

        try:
            table = run.run(on_event)
        except KeyboardInterrupt:
            progress.stop()
            print(
                f"interrupted: finished evaluations and their checkpoints (and pre-training's state of the last "
                f"minute) are kept in {out}; rerun the same command to resume from there",
                file=sys.stderr,
            )
            raise typer.Exit(130) from None
    return table


def _print_train_summary(table, config, out: Path) -> None:
    import numpy as np

    from csil_diag.diag.aggregate import iqm_ci

    evals = table[table.kind == "eval"].sort_values(["seed", "env_steps"])
    if evals.empty:
        console.print(f"no evaluation finished in {out}")
        return
    t = Table("seed", "BC start", "final", "best", "env steps", "online vs expert Σlogσ AUROC (final)")
    for seed, frame in evals.groupby("seed"):
        first, last = frame.iloc[0], frame.iloc[-1]
        auroc = (
            f"{last['auroc_gauss_valid']:.2f}"
            if "auroc_gauss_valid" in frame and np.isfinite(last.get("auroc_gauss_valid", np.nan))
            else "–"
        )
        t.add_row(
            str(seed),
            f"{first.success_rate:.2f}",
            f"{last.success_rate:.2f}",
            f"{frame.success_rate.max():.2f}",
            str(int(last.env_steps)),
            auroc,
        )
    console.print(t)
    finals = evals.groupby("seed").tail(1).success_rate.to_numpy()
    starts = evals.groupby("seed").head(1).success_rate.to_numpy()
    iqm, lo, hi = iqm_ci(finals)
    iqm0, lo0, hi0 = iqm_ci(starts)
    ci = "" if np.isnan(lo) else f" [95 % CI {lo:.2f}, {hi:.2f}]"
    ci0 = "" if np.isnan(lo0) else f" [{lo0:.2f}, {hi0:.2f}]"
    console.print(
        f"{config.rl.algo} ({config.mode}, {config.input}) on {config.task}: success IQM {iqm0:.2f}{ci0} at the start "
        f"→ {iqm:.2f}{ci} after {int(evals.env_steps.max())} env steps over {len(finals)} seed(s)"
    )
    console.print(
        f"wrote {out}/metrics.parquet, seed*/ckpt, {out}/tensorboard (tensorboard --logdir {out}/tensorboard)"
    )


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="a `csil-diag train` run directory"),
    episodes: int = typer.Option(50, help="episodes per seed and policy (fresh seeds, the same for start and final)"),
    at: str = typer.Option("start,final", help="start (the actor RL began from) and/or final (the last checkpoint)"),
    policy: str = typer.Option("deterministic", help="deterministic (tanh of the mean) and/or stochastic"),
    workers: int = typer.Option(0, help="env worker processes (0: one per core, at most the run's envs)"),
) -> None:
    """Re-evaluate a train run's start and final policies on more episodes than its in-run evaluations (paired, with a
    sign test): did RL raise the BC start?  Writes <run>/evaluation.parquet; a rerun skips what is there."""
    from csil_diag.csil.evaluate import evaluate_run

    ats, policies = tuple(_names(at)), tuple(_names(policy))
    with _progress() as progress:
        bar: dict[str, int] = {}
        base = {"done": 0}

        def on_event(event: str, info: dict) -> None:
            if event == "start":
                bar["id"] = progress.add_task("episodes", total=info["total"], completed=info["done"], status="")
                base["done"] = info["done"]
            elif event == "episodes" and bar:
                progress.update(bar["id"], completed=base["done"] + info["done"])
            elif event == "group" and bar:
                base["done"] += episodes
                status = f"seed {info['seed']} {info['at']} ({info['policy']}): {info['success']:.2f}"
                progress.update(bar["id"], completed=base["done"], status=status)

        try:
            table, fits = evaluate_run(run, episodes, ats, policies, workers, on_event)
        except KeyboardInterrupt:
            progress.stop()
            print(f"interrupted: finished groups are kept in {run}/evaluation.parquet; rerun to go on", file=sys.stderr)
            raise typer.Exit(130) from None
    _print_evaluation(table, fits, run)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _print_evaluation(table, fits, run: Path) -> None:
    from csil_diag.csil.evaluate import paired_summary, per_seed
    from csil_diag.diag.aggregate import iqm_ci

    for policy, frame in table.groupby("policy"):
        seeds = per_seed(frame, policy)
        cols = [c for c in ("start", "final") if c in seeds]
        t = Table(
            "seed",
            *cols,
            "env steps (final)",
            title=f"{policy} success over {frame.groupby(['seed', 'at']).size().max()} episodes",
        )
        for _, row in seeds.iterrows():
            steps = "–" if row.get("env_steps") != row.get("env_steps") else str(int(row["env_steps"]))
            t.add_row(str(int(row["seed"])), *(f"{row[c]:.2f}" for c in cols), steps)
        console.print(t)
        parts = []
        for c in cols:
            iqm, lo, hi = iqm_ci(seeds[c].to_numpy())
            parts.append(f"{c} IQM {iqm:.2f}" + ("" if lo != lo else f" [95 % CI {lo:.2f}, {hi:.2f}]"))
        console.print(f"{policy}: " + " → ".join(parts))
        paired = paired_summary(frame, policy)
        if "p_value" in paired:
            console.print(
                f"{policy}, paired over {paired['episodes']} episodes: final succeeds where start fails "
                f"{paired['final_wins']}×, the reverse {paired['final_losses']}× "
                f"(sign test p = {paired['p_value']:.3g})"
            )
    if not fits.empty:
        wide = fits.pivot_table(index="at", columns="dim", values="mse", aggfunc="mean")
        wide = wide.reindex([a for a in ("start", "final") if a in wide.index])
        for at_name, row in wide.iterrows():
            dims = " ".join(f"{v:.3f}" for v in row.to_numpy())
            console.print(
                f"held-out demo MSE of the deterministic action, {at_name} (mean over seeds; per dim): {dims}"
            )
        if "kl_to_start" in fits and (fits["at"] == "final").any():
            final = fits[fits["at"] == "final"]
            per_dim = final.groupby("dim").kl_to_start.mean().to_numpy()
            per_seed = final.groupby("seed").kl_to_start.sum()
            console.print(
                "KL(final ‖ start) on the held-out demo states, nats: per seed "
                + ", ".join(f"{int(k)}: {v:.2f}" for k, v in per_seed.items())
                + f"; per dim (mean over seeds) {' '.join(f'{v:.2f}' for v in per_dim)}"
            )
    console.print(f"wrote {run}/evaluation.parquet ({len(table)} episodes), {run}/evaluation_fit.parquet")


# ------------------------------------------------------------------------------------------ probe
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
    import time

    from csil_diag.diag import object_probe as op
    from csil_diag.runs import RunDir, atomic_write_json, atomic_write_parquet, file_fingerprint, now_utc
    from csil_diag.vla.pi0 import EMBEDDING_SITES
    from csil_diag.vla.policy import resolve_model_dir

    chosen = _csv(sites)
    bad = [s for s in chosen if s not in EMBEDDING_SITES]
    if bad or not chosen:
        raise UserError(f"--sites takes {', '.join(EMBEDDING_SITES)} (got {sites!r})")
    if n < 2:
        raise UserError(f"--n must be at least 2 start states (got {n})")
    from csil_diag.features.dataset import dataset_task

    if dataset_task(demos) != task:
        raise UserError(f"{demos} holds {dataset_task(demos)} demos but --task is {task}; pass demos of {task}")
    run_dir = RunDir(out).check()
    model_dir = resolve_model_dir(model)
    start = time.perf_counter()
    embedders, fingerprint, cameras, size = {}, None, None, None
    for site in chosen:
        embed, policy = op.vla_embedder(model_dir, site, task)
        embedders[f"π0 {site}"] = embed
        fingerprint, cameras, size = policy.fingerprint, policy.cameras, policy.image_size
    embedders["joints+object"] = op.lowdim_embedder()
    states = op.collect_states(task, demos, cameras, size, n, seed=seed, on_progress=_count_bar("probe states"))
    table = op.probe_table(states, embedders)
    with run_dir.acquire(f"csil-diag probe object --out {out}"):
        atomic_write_parquet(out / "object_probe.parquet", table)
        meta = {"kind": "object_probe", "task": task, "demos": str(demos), "demos_sha256": file_fingerprint(demos)}
        meta |= {"model": str(model_dir), "fingerprint": fingerprint, "n_starts": len(states.base), "seed": seed}
        meta |= {"seconds": round(time.perf_counter() - start, 1), "written": now_utc()}
        atomic_write_json(out / "probe.json", meta)
    names = list(dict.fromkeys(table.embedding))
    t = Table("perturbation", *names, title=f"sensitivity ‖Δ‖ / spread over demo states (mean ± std) — {model_dir}")
    for p in op.PERTURBATIONS:
        part = table[table.perturbation == p.label].set_index("embedding")
        t.add_row(p.label, *[f"{part.sensitivity[n]:.3f} ± {part.sensitivity_std[n]:.3f}" for n in names])
    console.print(t)
    for r in op.ratio_summary(table).itertuples():
        console.print(f"{r.embedding}: object / robot at {r.size * 100:.0f} cm = {r.object_over_robot:.2f}")
    console.print(f"wrote {out / 'object_probe.parquet'} and {out / 'probe.json'} ({json.dumps(meta['seconds'])} s)")


@app.command()
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


# ------------------------------------------------------------------------------------------ embed
@app.command()
def embed(
    demos: Path = typer.Option(..., help="robomimic HDF5 with camera images (agentview, wrist)"),
    model: Path = typer.Option(None, help="π0 checkpoint directory (default: the embedded tiny model)"),
    site: str = typer.Option("state", help="embedding site: state | actions | prefix"),
    batch: int = typer.Option(32, help="observations per model call"),
    seed: int = typer.Option(0, help="seed of the flow-matching noise (the VLA's actions)"),
) -> None:
    """π0's embedding and action for every demo state, cached beside the dataset (<demos>.embeddings/)."""
    from csil_diag.vla.embed import ensure_embeddings
    from csil_diag.vla.policy import VLAPolicy, resolve_model_dir

    policy = VLAPolicy.load(resolve_model_dir(model), site=site, batch_size=batch, seed=seed)
    result = ensure_embeddings(policy, demos, _count_bar("π0 embeddings"))
    what = f"{result.n_states} states of {len(result.table.demos)} demos (site {site}, width {result.width})"
    if result.computed:
        console.print(
            f"embedded {what} in {result.seconds:.1f} s: {result.obs_per_s:.1f} obs/s at batch {batch} "
            "after compilation"
        )
    else:
        console.print(f"reused the cached embeddings of {what}")
    console.print(f"{result.path}")


# ----------------------------------------------------------------------------------------- report
@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="run directories written by csil-diag entropy"),
    out: Path = typer.Option(Path("reports/stationarity.pdf"), help="PDF path; PNGs are written beside it"),
) -> None:
    """Multi-page PDF stationarity report (plus one PNG per figure) from run directories only."""
    from csil_diag.report.pdf import build_report

    summary = build_report(list(runs), out)
    tables = f", {len(summary.tables)} CSV" if summary.tables else ""
    console.print(f"wrote {summary.pdf} ({summary.pages} pages), {len(summary.pngs)} PNGs{tables}:")
    for path in [*summary.pngs, *summary.tables]:
        console.print(f"  {path}")


# ------------------------------------------------------------------------------------------ bench
@app.command()
def bench(
    out: Path = typer.Option(None, help="also write the JSON here"),
    quick: bool = typer.Option(False, help="fewer widths and repeats (a smoke run)"),
    point: bool = typer.Option(False, help="instead: where one diagnostic point's time goes (needs --demos)"),
    demos: Path = typer.Option(None, help="--point: lift demos with both cameras (e.g. the main job's)"),
    instruments: bool = typer.Option(False, help="instead: projections of 20k states in the three HetStat spaces"),
) -> None:
    """Speed: BC steps/s (batch 256; input widths 18, 1032, 2056; with each step's AdamW update timed alone and the
    most of the matmul rate the step can reach with it) and SAC updates (csil, sacfd; widths 18, 1032) against this
    machine's matmul rate, entropy evaluation states/s, rollout steps/s with and without cameras. Prints JSON."""
    import json

    if point:
        from csil_diag.benchmarks.point import point_breakdown

        if demos is None or not demos.is_file():
            raise UserError(
                "--point needs --demos <lift demos with cameras>, e.g. data/lift_img.hdf5 (scripts/main.sh)"
            )
        result = point_breakdown(str(demos))
    elif instruments:
        from csil_diag.benchmarks.instruments import projection_speed

        result = projection_speed()
    else:
        from csil_diag.benchmarks.speed import run as run_bench

        result = run_bench(quick=quick)
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        from csil_diag.runs import atomic_write_bytes

        atomic_write_bytes(out, (text + "\n").encode())


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    from csil_diag.cache import enable_compilation_cache

    enable_compilation_cache()  # before JAX is imported: every command re-uses what earlier ones compiled
    try:
        app(standalone_mode=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one plain line, never wrapped
        sys.exit(2)


if __name__ == "__main__":
    main()
