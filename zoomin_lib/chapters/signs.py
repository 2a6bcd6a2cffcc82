"""Chapters 06 (road scenes) and 07 (fMoW): the methods trained one after another, Zoom-In + boxes, figures.

Both chapters train the same way: every method of a table on the same lazily read mini-batches
(`train.protocol.run_method`), then a Zoom-In that also learns from the box of the object that
gives the label (`BOXES`; not in the papers): a, b and f pre-trained on the box
(`train.supervision.pretrained_from_boxes`, as appendix L does with Camelyon16's outlines), then
the attention cross-entropy against it during training (`box_weight`). The figures of where Zoom-In
looks follow Zoom-In fig. 3: the tile of highest alpha, its sub-tile of highest beta, and that
sub-tile at full resolution.

Chapter 06's own pieces (ATS sec. 4.4, Zoom-In sec. 4 and appendix G) are its image loader and its
figure of one road scene per class; chapter 07's are in `chapters.fmow`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from data_prep import traffic_signs
from zoomin_lib.book.plotting import save_figure, show_attention, zoom_grid
from zoomin_lib.chapters.attention import zoom_picks
from zoomin_lib.chapters.per_class import present_classes
from zoomin_lib.train.protocol import (
    FoldResult,
    TrainSettings,
    lazy_batches,
    per_image,
    per_image_predictor,
    run_method,
    standardize,
)
from zoomin_lib.train.supervision import pretrained_from_boxes

__all__ = [
    "BOXES",
    "add_box_method",
    "budget_text",
    "train_methods",
    "box_fit_text",
    "save_zoom_figures",
    "batch_loader",
    "examples_figure",
]

BOXES = "Zoom-In + boxes"  # the table name of Zoom-In that also learns from the boxes

Loader = Callable[[Sequence[int]], Any]  # positions within a split -> a batch of images


def add_box_method(
    methods: dict[str, Callable[[], nn.Module]],
    settings: dict[str, TrainSettings],
    images: Callable[[], Iterable[tuple[Tensor, Tensor, int]]],
    box: Mapping[str, Any],
    *,
    seed: int,
    base: str = "Zoom-In",
    **pretrain: Any,
) -> None:
    """Add `BOXES` to methods and settings: the `base` network pre-trained on the boxes, trained with the box term.

    `images()` yields (image [1, C, H, W], box mask [H, W], label) per training image; `box` holds
    the profile's "pretrain" epochs per network, and the "epochs" and "lr" of the training that
    follows (the base's settings otherwise, `box_weight` 1). `pretrain` goes to
    `pretrained_from_boxes` (e.g. `background_class`). The pre-training runs when the factory is called.
    """
    methods[BOXES] = pretrained_from_boxes(methods[base], images, epochs=box["pretrain"], seed=seed, **pretrain)
    settings[BOXES] = replace(settings[base], epochs=box["epochs"], lr=box["lr"], box_weight=1.0)


def budget_text(cfg: Mapping[str, Any], zoomin: str, cnn: str) -> str:
    """One line on what the profile trains: `zoomin` (its N), batch, epochs and lr; the CNN's (`cnn`: its label); the boxes'."""
    box = cfg["boxes"]
    pretrain = ", ".join(f"{k} {v}" for k, v in box["pretrain"].items())
    return (f"{zoomin}, batch {cfg['batch']}, {cfg['epochs']} epochs, lr {cfg['lr']}"
            f"{' with cosine decay' if cfg['cosine'] else ''}; {cnn} {cfg['cnn_epochs']} epochs, lr 1e-3; {BOXES}: "
            f"pre-training epochs {pretrain}, then {box['epochs']} epochs at lr {box['lr']}")


def train_methods(
    methods: Mapping[str, Callable[[], nn.Module]],
    settings: Mapping[str, TrainSettings],
    *,
    load_train: Loader,
    train_labels: np.ndarray,
    load_test: Loader,
    test_labels: np.ndarray,
    batch: int,
    seed: int,
    out: Path,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
    box_masks: Callable[[Sequence[int]], Any] | None = None,
    images_of_any_size: bool = False,
) -> tuple[dict[str, list[FoldResult]], dict[str, nn.Module]]:
    """Train and test each method in turn on the same mini-batches; (name -> [its result], name -> trained model).

    Training batches of `batch` images come in the order of (seed, epoch), test batches of 8 in a
    fixed order; `BOXES` also gets the box masks of its images (`box_masks(indices)`). With
    `images_of_any_size`, a batch is a list of [1, C, H_i, W_i] images and the loss and the
    predictions are taken image by image (`per_image`). Each method's test accuracy is printed;
    runs and checkpoints go under `out` (tag `<name>_r0_f0`).
    """
    results, trained = {}, {}
    for name, factory in methods.items():
        sizes = {}
        if images_of_any_size:
            sizes = dict(loss_wrapper=per_image, predict_fn=per_image_predictor(generator=torch.Generator().manual_seed(seed)))
        result, model = run_method(
            name, factory, settings[name],
            lazy_batches(load_train, train_labels, batch, seed, masks=box_masks if name == BOXES else None),
            lazy_batches(load_test, test_labels, 8, seed, shuffle=False)(0),
            run_seed=seed, tag=f"{name}_r0_f0", out_dir=out, resume=resume, record=record, **sizes,
        )
        results[name], trained[name] = [result], model
        print(f"{name}: test accuracy {result.accuracy:.3f}")
    return results, trained


def box_fit_text(model: nn.Module, thing: str, images: str, tiles: str) -> str:
    """How well `BOXES`'s pre-training fitted the boxes: a's top tile and b's top location on `thing`, f's accuracy."""
    fits = model.box_pretraining["fits"]
    return (f"{BOXES}, after pre-training: a's top tile holds {thing} in {100 * fits['a']['top_on_roi']:.0f} % of "
            f"{images}, b's top location in {100 * fits['b']['top_on_roi']:.0f} % of {tiles}; "
            f"f classifies {100 * fits['f']['train_accuracy']:.0f} % of its training sub-tiles")


def save_zoom_figures(
    trained: Mapping[str, nn.Module],
    stems: Mapping[str, str],
    inputs: Sequence[Tensor],
    images: Sequence[np.ndarray],
    truth: Sequence[Sequence[tuple[float, float, float, float]]],
    labels: Sequence[int],
    classes: Sequence[str],
    data_label: str,
    out: Path,
) -> None:
    """For each method name -> file stem: Zoom-In fig. 3's rows (top tile, its top sub-tile, the sub-tile) saved under out.

    `inputs` are the model's inputs [1, C, H, W], `images` the same images as shown [H, W, 3],
    `truth` their ground-truth boxes (x0, y0, w, h), `labels` their true classes.
    """
    for name, stem in stems.items():
        picks = zoom_picks(trained[name], inputs)
        titles = [f"true {classes[label]}, predicted {classes[p[2]]}" for label, p in zip(labels, picks)]
        fig = zoom_grid(images, picks, truth, titles, f"{name}: highest-attention tile and sub-tile ({data_label})")
        save_figure(fig, out, stem)


# ----------------------------------------------------------------------------------------------------
# Chapter 06: road scenes
# ----------------------------------------------------------------------------------------------------


def batch_loader(data: traffic_signs.TrafficSigns, index: np.ndarray, stats: tuple[Tensor, Tensor]) -> Loader:
    """positions -> images data[index[positions]] read from disk and standardized with `stats`, [b, 3, H, W]."""
    return lambda idx: standardize(data.load_batch([int(index[i]) for i in idx]), stats)


def examples_figure(data: traffic_signs.TrafficSigns, data_label: str) -> Figure:
    """One training image per class present, the box of its sign in yellow; a class the data lack is named."""
    present, absent = present_classes(data.labels, traffic_signs.CLASSES)
    fig, axes = plt.subplots(1, len(present), figsize=(3.5 * len(present), 3), squeeze=False)
    for c, ax in zip(present, axes[0]):
        i = int(np.flatnonzero(data.labels == c)[0])
        show_attention(ax, data.read_image(i), title=f"{traffic_signs.CLASSES[c]} ({data_label})")
        for sign in data.samples[i].signs[:1]:
            x0, y0, x1, y1 = sign.box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1))
    fig.suptitle("One training image per class" + (f"; absent from the training set: {', '.join(absent)}" if absent
                                                    else ""), fontsize=9)
    return fig
