"""Parsing helpers shared by every command group: one list parser, one seed parser, one way to pass options on."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from csil_diag.errors import UserError


def split_csv(value: str | None) -> tuple[str, ...]:
    """'a, b,,c' → ('a', 'b', 'c'); None or '' → ()."""
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


def parse_seeds(value: str, option: str = "--seeds") -> tuple[int, ...]:
    """'0,1,2' → (0, 1, 2); anything else is a one-line error naming the option."""
    try:
        seeds = tuple(int(x) for x in split_csv(value))
    except ValueError:
        raise UserError(f"{option} takes comma-separated non-negative integers such as 0,1,2 (got {value!r})") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"{option} takes comma-separated non-negative integers such as 0,1,2 (got {value!r})")
    return seeds


def given(**options: Any) -> dict[str, Any]:
    """The options given on the command line: None means not given, so the config's (or preset's) value stays.

    Every command builds its frozen config the same way: ``replace(config, **given(name=value, ...))`` with each
    option named explicitly."""
    return {k: v for k, v in options.items() if v is not None}


def default_workers(workers: int, at_most: int | None = None) -> int:
    """``--workers``: as given, or 0 → one per core (at most ``at_most``, e.g. the environments to step)."""
    cores = os.cpu_count() or 1
    return workers or (cores if at_most is None else min(cores, at_most))


@contextmanager
def exit_on_interrupt(message: str, progress: Any = None) -> Iterator[None]:
    """Ctrl-C (or SIGTERM turned into it) → the bars stop, one line says what is kept, exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        if progress is not None:
            progress.stop()  # before printing: a live bar would overdraw the line
        print(f"interrupted: {message}", file=sys.stderr)
        raise typer.Exit(130) from None
