"""Tests of zoomin_lib.chapters.fmow: images loaded at their own size, one example per category."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch

from zoomin_lib.chapters import fmow as chapter


def _data(sizes, labels):
    """A stand-in for fmow.FMoW: image i is filled with the value i, of size sizes[i] (h, w)."""
    return SimpleNamespace(labels=np.asarray(labels), boxes=[[(1, 2, 3, 4)] for _ in sizes],
                           read_image=lambda i: np.full((*sizes[i], 3), i, np.uint8))


def test_image_loader_keeps_each_image_at_its_own_size():
    data = _data([(4, 6), (5, 3), (2, 2)], [0, 1, 2])
    stats = (torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 1 / 255))  # undoes the division by 255
    images = chapter.image_loader(data, np.array([2, 1]), stats)([1, 0])
    assert [tuple(x.shape) for x in images] == [(1, 3, 5, 3), (1, 3, 2, 2)]
    assert float(images[0].mean()) == 1.0 and float(images[1].mean()) == 2.0


def test_examples_figure_titles_each_category_with_the_image_size():
    data = _data([(50, 70), (40, 30), (60, 60)], [3, 0, 3])
    fig = chapter.examples_figure(data, "stand-in", columns=5)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["airport 30x40", "archaeological_site 70x50"]
    assert len(fig.axes) == 5 and all(not ax.axison for ax in fig.axes[2:])
    (box,) = shown[1].patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (1, 2, 3, 4)
    assert "absent from the training set: amusement_park" in fig._suptitle.get_text()
