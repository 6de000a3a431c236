"""The `csil-diag` command line: parses, validates, dispatches and formats. No science, no run logic here.

One module per command group; this one builds the typer ``app`` and registers them, in the order ``--help`` lists
them. Every group module keeps its heavy imports inside its commands: ``csil-diag --help`` imports none of them.
"""

from __future__ import annotations

import sys

import typer

from csil_diag.cli import bench, demos, embed, entropy, probe, report, sweep, train, vla
from csil_diag.errors import UserError

app = typer.Typer(
    help="CSIL-residual training and stationarity diagnostics for HetStat policies on VLA embeddings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(entropy.entropy)
app.command("slice-sweep")(sweep.slice_sweep)
app.command()(sweep.compare)
app.command("sweep")(sweep.sweep_cmd)
app.command()(train.train)
app.command()(train.evaluate)
app.command()(probe.project)
app.command()(embed.embed)
app.command()(report.report)
app.command()(bench.bench)
app.add_typer(demos.demos_app, name="demos")
app.add_typer(probe.probe_app, name="probe")
app.add_typer(
    vla.vla_app,
    name="vla",
    help="π0 in flax: pretrain / finetune (full, lora, lora-frozen-vision), eval, diff, openpi checkpoints, "
    "fixtures, parameter trees, bench.",
)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    from csil_diag.cache import enable_compilation_cache

    enable_compilation_cache()  # before JAX is imported: every command re-uses what earlier ones compiled
    try:
        app(standalone_mode=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one plain line, never wrapped
        sys.exit(2)


__all__ = ["app", "main"]
