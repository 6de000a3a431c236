"""`csil-diag bench`: the speed benchmarks of csil_diag.benchmarks, printed (and optionally written) as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from csil_diag.errors import UserError


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
