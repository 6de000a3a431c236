"""The ``--input`` spec: which features the HetStat sees.

Grammar: sources joined by ``+``, each optionally sliced with Python's ``[start:stop]`` (no step) or narrowed to an
explicit index set ``{i,j,…}`` (columns in the order given; what a random subset of an embedding is written as):

    joints+object        eef+object        pi0[:256]+joints        object[3:7]        pi0{3,17,42}+joints

A slice must lie inside the source's width: a stop past the end is an error, never a silent truncation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from csil_diag.errors import UserError

_SOURCE = re.compile(
    r"^(?P<name>[a-z][a-z0-9_]*)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\]|\{(?P<indices>\d+(?:,\d+)*)\})?$"
)


@dataclass(frozen=True)
class SourceSlice:
    """One term of the spec: a source name and an optional [start:stop]."""

    name: str
    start: int | None = None
    stop: int | None = None
    indices: tuple[int, ...] | None = None  # an explicit column set, instead of [start:stop]

    def columns(self, width: int) -> slice | tuple[int, ...]:
        """What to take of a (…, width) array: a slice, or the index set (checked against the width)."""
        if self.indices is None:
            return slice(*self.bounds(width))
        if max(self.indices) >= width:
            raise UserError(
                f"{self.name}{{…}} selects column {max(self.indices)}, outside {self.name}'s width {width}; "
                f"use indices within [0, {width - 1}]"
            )
        return self.indices

    def width(self, source_width: int) -> int:
        cols = self.columns(source_width)
        return len(cols) if isinstance(cols, tuple) else cols.stop - cols.start

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
        if self.indices is not None:
            return f"{self.name}{{{','.join(map(str, self.indices))}}}"
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
                raise UserError(
                    f"cannot parse {term!r} in --input {text!r}; write e.g. joints+object, pi0[:256] or pi0{{3,17,42}}"
                )
            start, stop = m.group("start"), m.group("stop")
            indices = tuple(int(i) for i in m.group("indices").split(",")) if m.group("indices") else None
            if indices is not None and len(set(indices)) != len(indices):
                raise UserError(f"{term!r} in --input names a column twice; give each index once")
            terms.append(
                SourceSlice(m.group("name"), int(start) if start else None, int(stop) if stop else None, indices)
            )
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise UserError(f"a source appears twice in --input {text!r}")
        return cls(tuple(terms))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.sources)

    def __str__(self) -> str:
        return "+".join(str(t) for t in self.sources)
