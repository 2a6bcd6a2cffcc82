"""Chapter 07's pieces (fMoW, Zoom-In sec. 4): images read at their own size, one example per category.

Zoom-In takes each fMoW image at its own size (the tile grid and the views follow the image), so a
mini-batch is a list of [1, 3, H_i, W_i] tensors rather than one tensor (`image_loader`). What
chapters 06 and 07 share, the methods trained in turn and Zoom-In + boxes, is in `chapters.signs`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from data_prep import fmow
from zoomin_lib.chapters.per_class import present_classes
from zoomin_lib.train.protocol import standardized_image

__all__ = ["image_loader", "examples_figure"]


def image_loader(
    data: fmow.FMoW, index: np.ndarray, stats: tuple[Tensor, Tensor]
) -> Callable[[Sequence[int]], list[Tensor]]:
    """positions -> images data[index[positions]] as a list of standardized [1, 3, H_i, W_i] tensors, each at its own size."""
    return lambda idx: [standardized_image(data.read_image(int(index[i])), stats) for i in idx]


def examples_figure(data: fmow.FMoW, data_label: str, columns: int = 5) -> Figure:
    """One training image per category present, with its size and the object's box in yellow; absent categories named."""
    present, absent = present_classes(data.labels, fmow.CATEGORIES)
    rows = (len(present) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.25 * rows), squeeze=False)
    for ax in axes.flat[len(present):]:
        ax.axis("off")
    for c, ax in zip(present, axes.flat):
        i = int(np.flatnonzero(data.labels == c)[0])
        image = data.read_image(i)  # [H, W, 3]
        ax.imshow(image)
        for x0, y0, w, h in data.boxes[i]:
            ax.add_patch(plt.Rectangle((x0, y0), w, h, fill=False, ec="yellow", lw=1))
        ax.set_title(f"{fmow.CATEGORIES[c]} {image.shape[1]}x{image.shape[0]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"One training image per class, object box in yellow ({data_label})"
                 + (f"\nabsent from the training set: {', '.join(absent)}" if absent else ""), fontsize=9)
    return fig
