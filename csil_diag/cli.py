"""The `csil-diag` command line: parses, validates, dispatches. No science here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from csil_diag.errors import UserError

app = typer.Typer(
    help="CSIL-residual training and stationarity diagnostics for HetStat policies on VLA embeddings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
demos_app = typer.Typer(
    help="Scripted demonstrations in robomimic's HDF5 layout.", pretty_exceptions_enable=False
)
app.add_typer(demos_app, name="demos")

console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
    )


# ------------------------------------------------------------------------------------------ demos
@demos_app.callback(invoke_without_command=True)
def demos(
    ctx: typer.Context,
    task: str = typer.Option(None, help="lift, can or square"),
    n: int = typer.Option(200, "--n", help="number of successful demos to write"),
    cameras: str = typer.Option("", help="comma-separated: agentview,wrist (none: low-dim only)"),
    image_size: int = typer.Option(84, help="camera image height = width, pixels"),
    noise: float = typer.Option(0.0, help="std of Gaussian noise on the expert's arm actions"),
    speed_jitter: float = typer.Option(0.0, help="per-episode expert speed variation, ± fraction"),
    seed: int = typer.Option(0, help="base seed (attempt i uses a seed derived from it)"),
    valid_fraction: float = typer.Option(0.1, help="fraction of demos in mask/valid"),
    workers: int = typer.Option(0, help="worker processes (0: one per core)"),
    out: Path = typer.Option(None, help="output HDF5 (robomimic layout)"),
) -> None:
    """Generate expert demos: `csil-diag demos --task can --n 200 --out data/can.hdf5`."""
    if ctx.invoked_subcommand is not None:
        return
    if task is None or out is None:
        raise UserError("csil-diag demos needs --task and --out (or a subcommand: info, replay)")
    from csil_diag.data.demos import DemoConfig, generate_demos

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

    names = list(read_info(path).demos[:n])
    results = replay_demos(path, names)
    table = Table("demo", "steps", "recorded", "replayed", "max |Δobject|")
    for r in results:
        table.add_row(
            r.demo, str(r.steps), str(r.recorded_success), str(r.replay_success), f"{r.max_object_error:.2e}"
        )
    console.print(table)
    ok = sum(r.replay_success == r.recorded_success for r in results)
    console.print(f"{ok}/{len(results)} replays reproduce the recorded outcome")
    if ok != len(results):
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one plain line, never wrapped
        sys.exit(2)


if __name__ == "__main__":
    main()
