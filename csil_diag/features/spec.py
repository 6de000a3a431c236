"""The ``--input`` spec: which features the HetStat sees.

Grammar: sources joined by ``+``, each optionally sliced with Python's ``[start:stop]`` (no step):

    joints+object        eef+object        pi0[:256]+joints        object[3:7]

A slice must lie inside the source's width: a stop past the end is an error, never a silent truncation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from csil_diag.errors import UserError

_SOURCE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


@dataclass(frozen=True)
class SourceSlice:
    """One term of the spec: a source name and an optional [start:stop]."""

    name: str
    start: int | None = None
    stop: int | None = None

    def bounds(self, width: int) -> tuple[int, int]:
        """Resolve against the source's width; negative indices count from the end, as in Python."""
        start = 0 if self.start is None else self.start
        stop = width if self.stop is None else self.stop
        if start < 0:
            start += width
        if stop < 0:
            stop += width
        if not 0 <= start < stop <= width:
            raise UserError(f"slice {self} is outside {self.name}'s width {width}; use indices within [0, {width}]")
        return start, stop

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.name
        return f"{self.name}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


@dataclass(frozen=True)
class InputSpec:
    """A parsed ``--input`` spec."""

    sources: tuple[SourceSlice, ...]

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        text = (text or "").replace(" ", "")
        if not text:
            raise UserError("empty --input spec; e.g. --input joints+object")
        terms = []
        for term in text.split("+"):
            m = _SOURCE.match(term)
            if m is None:
                raise UserError(f"cannot parse {term!r} in --input {text!r}; write e.g. joints+object or pi0[:256]")
            start, stop = m.group("start"), m.group("stop")
            terms.append(SourceSlice(m.group("name"), int(start) if start else None, int(stop) if stop else None))
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise UserError(f"a source appears twice in --input {text!r}")
        return cls(tuple(terms))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.sources)

    def __str__(self) -> str:
        return "+".join(str(t) for t in self.sources)
