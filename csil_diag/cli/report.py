"""`csil-diag report`: the PDF stationarity report (and its PNGs) from run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from csil_diag.ui import console


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
