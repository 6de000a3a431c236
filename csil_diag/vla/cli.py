"""``csil-diag vla …``: π0 utilities (fixture check, parameter trees). Parses and dispatches only."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from csil_diag.errors import UserError

vla_app = typer.Typer(
    help="π0 in flax: openpi compatibility checks and parameter trees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)

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
) -> None:
    """Throughput of the one-call actions + embeddings path on this machine."""
    import jax

    from csil_diag.vla.bench import measure_throughput
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
    result = measure_throughput(config, params, batch=batch, num_steps=steps)
    console.print(
        f"{result['obs_per_s']:.1f} obs/s ({result['ms_per_call']:.0f} ms per call of batch {batch}, {steps} steps, "
        f"{dtype}; first call incl. compilation {result['first_call_s']:.1f} s) on {jax.devices()[0].platform}"
    )
