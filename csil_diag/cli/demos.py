"""`csil-diag demos` (generate), `demos info` and `demos replay`: scripted demonstrations in robomimic's layout."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from csil_diag.cli.common import default_workers, exit_on_interrupt, split_csv
from csil_diag.envs.tasks import TASK_CHOICES
from csil_diag.errors import UserError
from csil_diag.ui import console
from csil_diag.ui import make_progress as _progress

demos_app = typer.Typer(help="Scripted demonstrations in robomimic's HDF5 layout.", pretty_exceptions_enable=False)


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
        cameras=split_csv(cameras),
        image_size=image_size,
        noise=noise,
        speed_jitter=speed_jitter,
        seed=seed,
        valid_fraction=valid_fraction,
    )
    workers = default_workers(workers, n)
    progress, bars = _progress(), {}

    def update(have: int, attempts: int, steps: int) -> None:
        if not bars:  # start drawing only once the output is known to be writable
            progress.start()
            bars["demos"] = progress.add_task(f"{task} demos", total=n, status="")
        rate = 100.0 * have / attempts if attempts else 0.0
        progress.update(bars["demos"], completed=have, status=f"{attempts} attempts ({rate:.0f} % ok)")

    kept = f"finished demos are kept in {out}.partial; rerun the same command to resume"
    try:
        # SIGTERM (schedulers, timeout) keeps <out>.partial like Ctrl-C
        with exit_on_interrupt(kept, progress), terminate_as_interrupt():
            summary = generate_demos(config, out, workers=workers, on_progress=update)
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
    from csil_diag.data.robomimic import read_info

    info = read_info(path)
    shortest, mean_length, longest = info.length_range
    table = Table(title=str(path), show_header=False)
    table.add_row("env", f"{info.env_args.get('env_name')} (task {info.env_args.get('task', '?')})")
    table.add_row("demos", f"{len(info.demos)} ({', '.join(f'{k} {len(v)}' for k, v in info.masks.items())})")
    table.add_row("samples", str(info.total))
    table.add_row("length", f"min {shortest}, mean {mean_length:.1f}, max {longest}")
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
