"""Landscape A4 pages of text, the report's tables and summaries."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

LINES_PER_PAGE = 46


def text_pages(title: str, lines: list[str], mono: bool = False) -> list[Figure]:
    """Landscape A4 pages of text; long lines are wrapped, never cut, and a long text continues on more pages."""
    width = 150 if mono else 125
    wrapped = [piece for line in lines for piece in (textwrap.wrap(line, width, subsequent_indent="      ") or [""])]
    chunks = [wrapped[i : i + LINES_PER_PAGE] for i in range(0, max(len(wrapped), 1), LINES_PER_PAGE)]
    figs = []
    for number, chunk in enumerate(chunks):
        fig = plt.figure(figsize=(11.69, 8.27))
        suffix = f" ({number + 1}/{len(chunks)})" if len(chunks) > 1 else ""
        fig.text(0.05, 0.95, title + suffix, fontsize=16, weight="bold", va="top")
        fig.text(
            0.05,
            0.90,
            "\n".join(chunk),
            fontsize=8 if mono else 9.5,
            va="top",
            family="monospace" if mono else None,
            linespacing=1.35,
        )
        figs.append(fig)
    return figs
