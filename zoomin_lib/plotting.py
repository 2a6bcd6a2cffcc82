"""Figures for the chapters: one saving routine, and the plots more than one chapter draws."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .io import _atomic

__all__ = ["save_figure", "relative_error_bars", "log_floor", "lift_zeros"]


def save_figure(fig: Figure, folder: str | os.PathLike, name: str, dpi: int = 120) -> Path:
    """Save `fig` as `folder/name.png`, atomically, and return the path."""
    return _atomic(Path(folder) / f"{name}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


def relative_error_bars(
    table: Mapping[str, Mapping[str, float]],
    columns: Sequence[str],
    floor: float = 1e-17,
    title: str = "",
) -> Figure:
    """Grouped bars (log scale) of relative errors: one group per row of `table`, one bar per column."""
    rows = list(table)
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for j, col in enumerate(columns):
        values = [max(table[r][col], floor) for r in rows]
        ax.bar(np.arange(len(rows)) + (j - (len(columns) - 1) / 2) * width, values, width, label=col)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(rows)), rows, rotation=10)
    ax.set_ylabel("relative error of the expectation")
    ax.axhline(1e-10, color="k", lw=0.8, ls="--")
    ax.text(len(rows) - 0.5, 1.5e-10, "1e-10", ha="right", va="bottom", fontsize=8)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def log_floor(*series: Sequence[float], zero: float = 1e-20, factor: float = 0.3) -> float:
    """A level on a log axis below every value above `zero`, on which zeros (up to rounding) are drawn."""
    positive = [v for values in series for v in values if v > zero]
    if not positive:
        raise ValueError("log_floor needs at least one value above zero")
    return factor * min(positive)


def lift_zeros(values: Sequence[float], floor: float) -> np.ndarray:
    """Values for a log axis, with everything below `floor` (zeros) drawn at `floor`."""
    return np.maximum(np.asarray(values, dtype=float), floor)
