"""Chapter 03 (colon cancer, Zoom-In sec. 4 and ATS sec. 4.3): its figures, the table of its cell types, its records.

* `examples_figure`: the first positive and negative images with their annotated epithelial nuclei;
* `annotation_rows`: which cell types the data set annotates, and the one that decides the label;
* `attention_figure`: where Zoom-In (alpha_c beta^c_c' over the sub-tile grid, Zoom-In fig. 6a) and
  ATS (alpha over V(x, 0.2), ATS fig. 4) look on a few images, with their top-k patches;
* `memory_ratios`: Zoom-In's peak inference memory over ATS-10's and the CNN's, measured and in
  Zoom-In table 1;
* `run_records`: each fold's accuracy and AUC per method, for the chapter's metrics;
* `attention_on_epithelium`: every run's attention mass on the epithelium of some positive images,
  against the uniform share (`attention.attention_on_objects` on each run's rebuilt model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from data_prep.colon_cancer import POSITIVE_TYPE, UNIFORM_PATCH, ColonCancerData
from zoomin_lib.book.paper_numbers import ZOOMIN_TABLE1_COLON
from zoomin_lib.book.plotting import show_attention
from zoomin_lib.chapters.attention import attention_map, attention_on_objects
from zoomin_lib.train.protocol import Factory, FoldResult, load_run_model

__all__ = ["examples_figure", "annotation_rows", "attention_figure", "memory_ratios", "run_records",
           "attention_on_epithelium"]


def examples_figure(data: ColonCancerData, data_label: str, per_class: int = 2) -> Figure:
    """The first `per_class` positive and then negative images, with their annotated epithelial nuclei (cyan)."""
    shown = [int(i) for i in np.flatnonzero(data.labels == 1)[:per_class]] + \
        [int(i) for i in np.flatnonzero(data.labels == 0)[:per_class]]
    fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.2), squeeze=False)
    for ax, i in zip(axes[0], shown):
        show_attention(ax, data.images[i], points=data.cells[i]["epithelial"],
                       title=f"{data.ids[i]}: {'positive' if data.labels[i] else 'negative'} ({data_label})")
    fig.suptitle("Examples; cyan dots: annotated epithelial nuclei", fontsize=9)
    return fig


def annotation_rows(annotated: Mapping[str, int], n_images: int) -> list[dict[str, str]]:
    """One row per cell type: in how many of the `n_images` images it is annotated; which decides the label, which is absent."""
    return [{"cell type": t, "images with its annotation": f"{n} of {n_images}",
             "note": "decides the label" if t == POSITIVE_TYPE else ("absent" if n == 0 else "")}
            for t, n in annotated.items()]


def attention_figure(zoom: nn.Module, ats: nn.Module, data: ColonCancerData, x: Tensor, indices: Sequence[int],
                     data_label: str) -> Figure:
    """One row per image of `indices`: the image and its nuclei, Zoom-In's attention and top-k, ATS's.

    x [N, 3, H, W] holds the standardized images the models see; `data.images` the ones drawn.
    Both models are put in eval mode and predict from their top-k locations, without gradients.
    """
    zoom, ats = zoom.eval(), ats.eval()
    fig, axes = plt.subplots(len(indices), 3, figsize=(9, 3 * len(indices)), squeeze=False)
    with torch.no_grad():
        for row, i in zip(axes, indices):
            xi = x[i : i + 1]  # [1, 3, H, W]
            zo, ao = zoom(xi, mode="topk"), ats(xi, mode="topk")
            show_attention(row[0], data.images[i], points=data.cells[i]["epithelial"],
                           title=f"{data.ids[i]} (label 1)")
            show_attention(row[1], data.images[i], attention_map(zoom, xi)[0].numpy(), centers=zo.centers[0].numpy(),
                           patch_size=zoom.patch_size,
                           title=f"Zoom-In, p(pos) = {torch.softmax(zo.logits, 1)[0, 1]:.2f}")
            show_attention(row[2], data.images[i], attention_map(ats, xi)[0].numpy(), centers=ao.centers[0].numpy(),
                           patch_size=ats.patch_size, title=f"ATS-10, p(pos) = {torch.softmax(ao.logits, 1)[0, 1]:.2f}")
    fig.suptitle(f"Attention on test images ({data_label})", fontsize=9)
    fig.tight_layout()
    return fig


def memory_ratios(zoom_mb: float, ats_mb: float, cnn_mb: float) -> list[dict[str, Any]]:
    """Zoom-In's peak memory over ATS-10's and over the full-resolution CNN's: measured here and in Zoom-In table 1."""
    paper = ZOOMIN_TABLE1_COLON["rows"]
    return [
        {"ratio": "Zoom-In / ATS-10", "measured here": zoom_mb / ats_mb,
         "paper (table 1)": paper["Zoom-In"]["memory_mb"] / paper["ATS-10"]["memory_mb"]},
        {"ratio": "Zoom-In / CNN (full resolution)", "measured here": zoom_mb / cnn_mb,
         "paper (table 1)": paper["Zoom-In"]["memory_mb"] / paper["CNN"]["memory_mb"]},
    ]


def run_records(results: Mapping[str, Sequence[FoldResult]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, one record per run: its repetition, fold, test accuracy and AUC (None where undefined)."""
    return {n: [{"repetition": r.repetition, "fold": r.fold, "accuracy": r.accuracy, "auc": r.auc} for r in rs]
            for n, rs in results.items()}


def attention_on_epithelium(
    methods: Mapping[str, Factory], out_dir: str | Path, folds: Sequence[Any], images: Tensor,
    cells: Sequence[Mapping[str, np.ndarray]], device: torch.device | str = "cpu", patch: int = UNIFORM_PATCH,
) -> list[dict[str, Any]]:
    """Per run of `folds` and per method: `attention_on_objects` on the images [M, C, H, W] with their epithelial cells.

    The object is every location whose `patch` x `patch` patch (or sub-tile) holds an epithelial
    detection's centre: a box of one patch centred on each centre. Each run's model is rebuilt from its
    checkpoint under `out_dir` (`protocol.load_run_model`) on `device`. Rows carry the repetition and
    fold; no image: no row.
    """
    if len(images) == 0:
        return []
    half = patch / 2
    boxes = [[(cx - half, cy - half, cx + half, cy + half) for cx, cy in c[POSITIVE_TYPE]] for c in cells]
    rows = []
    for f in folds:
        models = {k: load_run_model(build, out_dir, k, f.repetition, f.fold).to(device) for k, build in methods.items()}
        rows += [{"repetition": f.repetition, "fold": f.fold, **r}
                 for r in attention_on_objects(models, [images[i:i + 1] for i in range(len(images))], boxes)]
    return rows
