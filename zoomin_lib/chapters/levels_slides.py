"""Chapter 04, beyond the paper: a third level of zoom on the slides, beside the two-level Zoom-In.

Zoom-In's conclusion (sec. 5) names more levels as future work; `zoomin_lib.beyond.levels` adds them (eq. 5
with a sum over every level's cells, eq. 9's estimator folded level by level) and `zoomin_lib.wsi.levels`
runs them over the same lazy slides. The memory model of sec. 2.1 gains a term a level
(`theory.memory_model.levels_terms`): O(s1^2 HW + N' s2^2 c1^2 + M2 s3^2 c2^2 + N hw).

The three-level geometry is derived from the profile's two-level one by a fixed rule, chosen before any
measurement (`three_level_settings`): the same first stage, the same leaf resolution s2 (sub-tile centres
1 / s2 level-0 pixels apart) and the same number of patches N, but each drawn tile viewed at s2 / 2, cut
into 4 x 4 cells, and two leaves drawn in each drawn cell. It trains with `wsi.train.fit_slides` on the same
readers with the same epochs, lr, batch, warm-up and lambda as the two-level model, from the same seed.

- `three_level_settings`, `slide_levels`, `train_three_levels`: the model and its training;
- `compare_on_slides`: both models on the test slides, sampled with the same fixed seed per slide: accuracy,
  AUC, the fraction of patches on a metastasis, bytes read by kind, CPU and wall seconds, peak host memory;
- `comparison_rows`, `learning_figure`, `view_terms`: the table, the learning curves, the memory model's
  view terms beside the bytes read;
- `largest_views`, `peak_against_strip`: when the third level lowers the peak, measured against the height
  of the first stage's strips.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from data_prep import camelyon16
from zoomin_lib.beyond.levels import build_levels
from zoomin_lib.chapters.camelyon import roi_of
from zoomin_lib.models import module_device
from zoomin_lib.theory.memory_model import levels_terms, zoomin_terms
from zoomin_lib.train.loop import binary_auc, seed_everything
from zoomin_lib.train.profiling import host_peak_memory, lean_inference
from zoomin_lib.wsi.levels import SlideLevelsZoomIn
from zoomin_lib.wsi.predict import SlidePrediction, SlideZoomIn
from zoomin_lib.wsi.reader import SlideReader
from zoomin_lib.wsi.train import fit_slides

__all__ = ["NAME", "three_level_settings", "slide_levels", "train_three_levels", "SlideRun", "compare_on_slides",
           "comparison_rows", "learning_figure", "view_terms", "largest_views", "peak_against_strip"]

NAME = "Zoom-In, 3 levels"
CELLS_PER_SIDE, LEAVES = 4, 2  # a drawn tile is cut into 4 x 4 cells; 2 leaves are drawn in each drawn cell


def three_level_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The three-level geometry of a profile's two-level one (the rule of the module docstring).

    scales (s1, s2 / 2, s2), cells (tile, tile / 4), N / 2 tiles drawn (at least 1), 2 leaves a drawn cell:
    N patches of the same size, centred on the same s2 grid, as the two-level model's.
    """
    tile = int(cfg["tile"])
    if tile % CELLS_PER_SIDE:
        raise ValueError(f"the tile size {tile} is not divisible into {CELLS_PER_SIDE} x {CELLS_PER_SIDE} cells")
    return {"scales": (cfg["s1"], cfg["s2"] / 2, cfg["s2"]), "cells": (tile, tile // CELLS_PER_SIDE),
            "n": max(1, int(cfg["n"]) // LEAVES), "children": (LEAVES,), "patch": cfg["patch"]}


def slide_levels(cfg: Mapping[str, Any], stats: tuple[torch.Tensor, torch.Tensor], seed: int) -> SlideLevelsZoomIn:
    """A fresh three-level LeNet Zoom-In of the profile on slides (table 5's networks at every level)."""
    geo = three_level_settings(cfg)
    net = build_levels(in_channels=3, n_classes=2, scales=geo["scales"], cell_sizes=geo["cells"],
                       patch_size=geo["patch"], n_patches=geo["n"], n_children=geo["children"])
    return SlideLevelsZoomIn(net, stats, strip_pixels=cfg["strip_pixels"], seed=seed)


def train_three_levels(
    cfg: Mapping[str, Any], stats: tuple[torch.Tensor, torch.Tensor], readers: Sequence[SlideReader], *, seed: int,
    out: Path, resume: bool = False,
) -> tuple[SlideLevelsZoomIn, list[dict[str, Any]], float]:
    """(model, history, CPU seconds): `fit_slides` with the two-level model's epochs, lr, batch, warm-up and lambda."""
    generator = seed_everything(seed)
    model = slide_levels(cfg, stats, seed)
    cpu0 = time.process_time()
    history = fit_slides(model, readers, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch"],
                         warmup_epochs=cfg["warmup"], lam=1e-5, seed=seed, generator=generator,
                         checkpoint_path=out / "checkpoints" / "Zoom-In_3_levels.pt", resume=resume, progress=False)
    cpu = time.process_time() - cpu0
    print(f"{NAME}: {len(history)} epochs, {cpu:.0f} s CPU ({cpu / max(1, len(history)):.1f} s per epoch), "
          f"last epoch loss {history[-1]['loss']:.3f} (ce {history[-1]['ce']:.3f})")
    return model, history, cpu


class SlideRun(NamedTuple):
    """One model's sampled predictions on the test slides and what they cost."""

    metrics: dict[str, Any]  # accuracy, auc, hit rate, bytes by kind, seconds, peak memory
    predictions: list[SlidePrediction]


def _hit_fraction(pred: SlidePrediction, roi: Any) -> float:
    """The fraction of a prediction's patches that hold an annotated pixel."""
    boxes = pred.subtile_boxes()  # [M, 4] (x, y, w, h)
    return float(np.mean([roi.window((int(x), int(y)), (int(w), int(h)), (int(w), int(h))).any() for x, y, w, h in boxes]))


def compare_on_slides(
    models: Mapping[str, SlideZoomIn], test: Sequence[camelyon16.SlideRecord], *, memory_slides: int, seed: int,
) -> dict[str, SlideRun]:
    """Each model on each test slide, sampled with a fresh generator seeded `seed` (the same draws whatever the order).

    A slide's reads are recorded by kind (view: thumbnail and V(x, s1) strips; tile: the views of tiles and
    cells; patch: level 0); CPU seconds (`time.process_time`) and wall seconds per slide; the fraction of
    patches on a metastasis over the annotated tumour slides; peak host memory of one prediction
    (`host_peak_memory`, tiles and patches one at a time) on the first `memory_slides` test slides.
    """
    runs = {}
    for name, model in models.items():
        preds, cpu, kinds = [], [], []
        with lean_inference(model.net):
            for r in test:
                gen = torch.Generator(device=module_device(model)).manual_seed(seed)
                with model.open(r.path, record_reads=True) as reader:
                    c0 = time.process_time()
                    preds.append(model.predict_one(reader, mode="sample", generator=gen))
                    cpu.append(time.process_time() - c0)
                    by_kind = {"view": 0, "tile": 0, "patch": 0}
                    for kind, _, _, _, w, h in reader.read_log:
                        by_kind[kind] += 3 * w * h  # RGB uint8
                    kinds.append(by_kind)
            device = module_device(model)  # the memory runs draw as the scored predictions do
            peaks = [host_peak_memory(lambda p=r.path: model.predict_one(
                         p, mode="sample", generator=torch.Generator(device=device).manual_seed(seed)), device)
                     for r in test[:memory_slides]]
        y = np.array([r.label for r in test])
        p1 = np.array([p.probs[1] for p in preds])
        hits = [_hit_fraction(p, roi_of(r)) for r, p in zip(test, preds) if r.label == 1 and r.annotation is not None]
        runs[name] = SlideRun({
            "accuracy": float(((p1 > 0.5) == (y == 1)).mean()), "auc": binary_auc(p1, y), "n": len(test),
            "patch_hit_fraction": float(np.mean(hits)) if hits else float("nan"),
            "bytes_mean": float(np.mean([p.reads["bytes"] for p in preds])),
            "bytes_by_kind_mean": {k: float(np.mean([d[k] for d in kinds])) for k in ("view", "tile", "patch")},
            "reads_mean": float(np.mean([p.reads["count"] for p in preds])),
            "cpu_seconds_median": float(np.median(cpu)), "seconds_median": float(np.median([p.seconds for p in preds])),
            "unique_tiles_mean": float(np.mean([len(np.unique(p.tiles)) for p in preds])),
            **{k: float(np.mean([m[k] for m in peaks])) for k in ("torch_mb", "numpy_mb", "device_mb") if k in peaks[0]},
        }, preds)
    return runs


def comparison_rows(runs: Mapping[str, SlideRun], topk: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict]:
    """The table: a row per model (sampled, fixed seed), and the two-level top-k accuracy and AUC from the chapter."""
    rows = []
    for name, run in runs.items():
        m = run.metrics
        rows.append({
            "model": name, "accuracy % (sampling)": 100 * m["accuracy"], "AUC (sampling)": m["auc"],
            "accuracy % (top-k)": 100 * topk[name]["accuracy"] if topk and name in topk else "",
            "AUC (top-k)": (topk[name]["auc"] or "") if topk and name in topk else "",
            "patches on a metastasis %": 100 * m["patch_hit_fraction"],
            "peak tensors (MiB)": m["torch_mb"], "peak numpy (MiB)": m["numpy_mb"],
            **({"peak GPU (MiB)": m["device_mb"]} if "device_mb" in m else {}),
            "read, all (MiB)": m["bytes_mean"] / 2**20, "read, tile and cell views (KiB)": m["bytes_by_kind_mean"]["tile"] / 2**10,
            "read, patches (KiB)": m["bytes_by_kind_mean"]["patch"] / 2**10, "distinct tiles": m["unique_tiles_mean"],
            "CPU s per slide": m["cpu_seconds_median"], "wall s per slide": m["seconds_median"],
        })
    return rows


def view_terms(cfg: Mapping[str, Any], runs: Mapping[str, SlideRun], two: str, three: str) -> dict[str, float]:
    """The memory model's tile- and cell-view pixels per slide (`zoomin_terms`, `levels_terms`) at the mean N' measured.

    Two levels: N' s2^2 c1^2; three: N' (s2 / 2)^2 c1^2 + M2 s2^2 c2^2 (M2 = N / 2 cells, every drawn cell distinct).
    """
    geo = three_level_settings(cfg)
    side = 1  # the view term s1^2 HW is the same for both and not compared here
    z = zoomin_terms(side, side, cfg["s1"], cfg["s2"], cfg["tile"], cfg["patch"], cfg["n"],
                     runs[two].metrics["unique_tiles_mean"])
    lv = levels_terms(side, side, geo["scales"], geo["cells"], geo["patch"],
                      [runs[three].metrics["unique_tiles_mean"], geo["n"]], geo["n"] * LEAVES)
    return {"two": z["tiles"], "three": lv["level2"] + lv["level3"]}


def learning_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> Any:
    """Training cross-entropy per epoch of each model (the mean over its mini-batches), with log 2 (chance) dotted."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, hist in histories.items():
        ax.plot(range(1, len(hist) + 1), [h["ce"] for h in hist], "o-", ms=3, label=name)
    ax.axhline(np.log(2), color="gray", ls=":", lw=1, label="log 2 (a constant 0.5)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cross-entropy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def largest_views(cfg: Mapping[str, Any]) -> dict[str, int]:
    """View pixels of the largest single view after the first stage: a tile at s2 (two levels), the larger of a tile at
    s2 / 2 and a cell at s2 (three levels)."""
    geo = three_level_settings(cfg)
    (tile, cell), (_, s2h, s3) = geo["cells"], geo["scales"]
    side = lambda c, s: int(c * s) ** 2  # noqa: E731 (floor(c s)^2, as `geometry.view_size`)
    return {"two": side(cfg["tile"], cfg["s2"]), "three": max(side(tile, s2h), side(cell, s3))}


def peak_against_strip(
    models: Mapping[str, SlideZoomIn], path: str | Path, strips: Sequence[int], *, seed: int,
) -> list[dict[str, Any]]:
    """Peak host tensors (MiB) of one sampled prediction of `path` by each model, with first-stage strips of each size.

    The strip bounds the first stage's activations (`strip_pixels` view pixels through a); below the largest view
    of the later stages, that view bounds the peak instead. Tiles, cells and patches are read one at a time.
    """
    rows = []
    for strip in strips:
        row: dict[str, Any] = {"strip (view pixels)": int(strip)}
        for name, model in models.items():
            saved = model.strip_pixels
            model.strip_pixels = int(strip)
            try:
                with lean_inference(model.net):
                    device = module_device(model)
                    peak = host_peak_memory(lambda: model.predict_one(
                        path, mode="sample", generator=torch.Generator(device=device).manual_seed(seed)), device)
            finally:
                model.strip_pixels = saved
            row[f"{name}: peak tensors (MiB)"] = peak["torch_mb"]
        rows.append(row)
    return rows
