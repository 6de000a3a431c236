"""A measurement module's record: its lines on stdout and, with ``--out FILE``, in FILE under the command that made
them (the form of the records in results/: ``$ python -m csil_diag.benchmarks.NAME ARGS`` then the lines)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser for ``python -m module`` with the ``--out`` option every measurement module takes."""
    ap = argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, help="also write the record (command line, then the lines) to this file")
    return ap


def emit(lines: Sequence[str], module: str, argv: Sequence[str], out: Path | None) -> None:
    """Print ``lines``; with ``out``, write them there too, under ``$ python -m module argv``."""
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"$ python -m {module} {shlex.join(argv)}".rstrip() + "\n" + text + "\n")
