"""Figures for the chapters: one saving routine, and the plots more than one chapter draws."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from zoomin_lib.infra.io import atomic_write

__all__ = ["save_figure", "relative_error_bars", "log_floor", "lift_zeros", "show_attention", "error_bars", "show_zoom", "zoom_grid", "plot_curves"]


def save_figure(fig: Figure, folder: str | os.PathLike, name: str, dpi: int = 120) -> Path:
    """Save `fig` as `folder/name.png`, atomically, and return the path."""
    return atomic_write(Path(folder) / f"{name}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


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


def show_attention(
    ax: plt.Axes,
    image: np.ndarray,
    attention: np.ndarray | None = None,
    *,
    points: np.ndarray | None = None,
    centers: np.ndarray | None = None,
    patch_size: tuple[int, int] | None = None,
    title: str = "",
) -> None:
    """Draw `image` [H, W, 3], an attention map [h, w] stretched over it, points (x, y) and sampled patches.

    The map is shown min-max normalised (ATS sec. 4.3's w = (a - min a) / (max a - min a)) as a
    heat overlay; `centers` [N, 2] (row, col) with `patch_size` (ph, pw) are drawn as boxes.
    """
    H, W = image.shape[:2]
    ax.imshow(image, extent=(0, W, H, 0))
    if attention is not None:
        a = np.asarray(attention, dtype=float)
        span = a.max() - a.min()
        a = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        ax.imshow(a, cmap="inferno", alpha=0.45, extent=(0, W, H, 0), interpolation="nearest")
    if points is not None and len(points):
        ax.scatter(points[:, 0], points[:, 1], s=6, c="cyan", marker="o", linewidths=0)
    if centers is not None and patch_size is not None:
        ph, pw = patch_size
        for r, c in np.asarray(centers).reshape(-1, 2):
            ax.add_patch(plt.Rectangle((c - pw // 2, r - ph // 2), pw, ph, fill=False, ec="lime", lw=0.9))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def error_bars(
    means: Mapping[str, float], stds: Mapping[str, float], ylabel: str, title: str = ""
) -> Figure:
    """One point with a +-1 std error bar per method (Zoom-In figure 5)."""
    names = list(means)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3.2))
    y = [means[n] for n in names]
    e = [0.0 if not np.isfinite(stds.get(n, np.nan)) else stds[n] for n in names]
    ax.errorbar(np.arange(len(names)), y, yerr=e, fmt="o", capsize=6, color="C0")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def show_zoom(
    axes: Sequence[plt.Axes],
    image: np.ndarray,
    tile_box: tuple[int, int, int, int],
    subtile_box: tuple[int, int, int, int],
    title: str = "",
) -> None:
    """Zoom-In figure 3 on three axes: the image with its top tile, the tile with its top sub-tile, the sub-tile."""
    H, W = image.shape[:2]
    t, l, th, tw = tile_box
    r, c, ph, pw = subtile_box
    show_attention(axes[0], image, title=title)
    axes[0].add_patch(plt.Rectangle((l, t), tw, th, fill=False, ec="yellow", lw=1.2))
    tile = np.zeros((th, tw) + image.shape[2:], dtype=image.dtype)
    inside = image[t : min(t + th, H), l : min(l + tw, W)]
    tile[: inside.shape[0], : inside.shape[1]] = inside  # zero beyond the border, as the model sees it
    show_attention(axes[1], tile, title="tile with the highest alpha")
    axes[1].add_patch(plt.Rectangle((c - l, r - t), pw, ph, fill=False, ec="lime", lw=1.2))
    sub = np.zeros((ph, pw) + image.shape[2:], dtype=image.dtype)
    r0, c0 = max(r, 0), max(c, 0)
    part = image[r0 : min(r + ph, H), c0 : min(c + pw, W)]
    sub[r0 - r : r0 - r + part.shape[0], c0 - c : c0 - c + part.shape[1]] = part
    show_attention(axes[2], sub, title="its sub-tile with the highest beta")


def zoom_grid(
    images: Sequence[np.ndarray],
    picks: Sequence[tuple[tuple[int, ...], tuple[int, ...], int]],
    truth_boxes: Sequence[Sequence[tuple[float, float, float, float]]],
    titles: Sequence[str],
    suptitle: str = "",
) -> Figure:
    """One `show_zoom` row per image (picks from `chapters.attention.zoom_picks`), ground-truth boxes (x0, y0, w, h) in cyan."""
    fig, axes = plt.subplots(len(images), 3, figsize=(11, 3.2 * len(images)), squeeze=False)
    for row, image, (tile_box, sub_box, _), boxes, title in zip(axes, images, picks, truth_boxes, titles):
        show_zoom(row, image, tile_box, sub_box, title=title)
        for x0, y0, w, h in boxes:
            row[0].add_patch(plt.Rectangle((x0, y0), w, h, fill=False, ec="cyan", lw=1))
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    reference: float | None = None,
    reference_label: str = "",
    xlabel: str = "epoch",
    ylabel: str = "",
    title: str = "",
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """One line per named curve (x = 1, 2, ...), with an optional dashed horizontal reference line.

    With `ylim`, a curve that leaves that range is named in the legend with its range of values, so that
    one far-off curve does not flatten the others.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for k, (name, values) in enumerate(curves.items()):
        v = np.asarray(values, dtype=float)
        label = name
        if ylim is not None and v.size and (v.min() < ylim[0] or v.max() > ylim[1]):
            label += f" (leaves the plot: {v.min():.3g} to {v.max():.3g})"
        ax.plot(np.arange(1, v.size + 1), v, "o-", ms=3, color=f"C{k % 10}", label=label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", lw=0.9, label=reference_label or None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig
