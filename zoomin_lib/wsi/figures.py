"""Zoom-In fig. 1 / 6 on a slide: its thumbnail, alpha over the tissue tiles, annotations, drawn tiles and sub-tiles."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def show_slide(
    ax: Any,
    thumbnail: np.ndarray,
    dimensions: tuple[int, int],
    *,
    alpha: np.ndarray | None = None,
    tile_size: tuple[int, int] | None = None,
    tissue: np.ndarray | None = None,
    contours: Sequence[np.ndarray] = (),
    tile_boxes: np.ndarray | None = None,
    subtile_boxes: np.ndarray | None = None,
    title: str = "",
    heat: float = 0.5,
) -> None:
    """Zoom-In fig. 1 / 6: a slide's thumbnail, alpha over its tiles, annotation contours, drawn tiles and sub-tiles.

    Level-0 coordinates throughout: `dimensions` = (W, H); alpha [n_rows, n_cols] is min-max
    normalised over the tissue tiles (others transparent; `heat` its opacity); contours are [K, 2] (x, y) polygons
    (cyan), tile boxes (x, y, w, h) yellow, sub-tile boxes lime (with a dot at each centre, as they
    are a few thumbnail pixels wide).
    """
    import matplotlib.pyplot as plt

    W, H = dimensions
    ax.imshow(thumbnail, extent=(0, W, H, 0))
    if alpha is not None and tile_size is not None:
        th, tw = tile_size
        keep = np.ones(alpha.shape, dtype=bool) if tissue is None else np.asarray(tissue, dtype=bool)
        a = np.where(keep, alpha, np.nan)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        ax.imshow(np.ma.masked_invalid(a), cmap="inferno", alpha=heat, interpolation="nearest",
                  extent=(0, alpha.shape[1] * tw, alpha.shape[0] * th, 0))
    for c in contours:
        closed = np.vstack([c, c[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color="cyan", lw=1.0)
    for boxes, colour, lw in ((tile_boxes, "yellow", 1.0), (subtile_boxes, "lime", 0.8)):
        for x, y, w, h in ([] if boxes is None else boxes):
            ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec=colour, lw=lw))
    if subtile_boxes is not None and len(subtile_boxes):
        b = np.asarray(subtile_boxes)
        ax.scatter(b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2, s=4, c="lime", marker="s", linewidths=0)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
