"""Wall time per phase of a diagnostic point, for `csil-diag bench --point`: off (free) unless a timer is installed.

A phase is a ``with phase("name"):`` block; nested blocks count in both their own phase and the enclosing one, so a
breakdown lists the leaves of one level (e.g. ``rollout/pi0`` inside ``rollout``) and their parent's remainder.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

_TIMER: PhaseTimer | None = None


class PhaseTimer:
    """Accumulated wall seconds and entries per phase name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block into the installed timer (nothing when none is)."""
    timer = _TIMER
    if timer is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timer.add(name, time.perf_counter() - start)


@contextmanager
def timing() -> Iterator[PhaseTimer]:
    """Install a fresh timer for the block; yields it."""
    global _TIMER
    previous, _TIMER = _TIMER, PhaseTimer()
    try:
        yield _TIMER
    finally:
        _TIMER = previous
