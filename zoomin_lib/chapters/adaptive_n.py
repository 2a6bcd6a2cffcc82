"""N from the data against a fixed N at equal average cost, on a trained Zoom-In (chapters 03 and 04).

The rule is `zoomin_lib.beyond.adaptive` (its proof of unbiasedness is in chapter 01): P pilot rounds of
`round_size` two-stage draws (Zoom-In eq. 9) estimate the per-round variance s^2 of the logit margin
(g's logit of class 1 minus class 0), each image then gets M = clip(ceil(s^2 / tol^2), 1, budget - P)
fresh rounds (at least `min_rounds`), and the estimate is their mean. The tolerance is set from the test images' pilots so that
the average number of patches read, pilot included, is at most the fixed N it is compared with
(`beyond.adaptive.tolerance_for_cost`; a function of the pilots only, so the estimate stays unbiased).
Each image is estimated `repeats` times by both rules, from one alpha, so that accuracy, AUC and the
spread of each image's margin are means over repeats.

- `compare_on_images` (a batch of tensors, chapter 03) and `compare_on_slides` (lazy slides, one at a time,
  chapter 04) return an `NComparison`;
- `method_rows` (cost, accuracy, AUC, the spread of the margin), `class_rows` (N by class), `image_rows` (N and
  the margin's spread per image) and `n_figure` (the histogram of N by class, the spread per image).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from zoomin_lib.beyond.adaptive import (
    ZoomInEstimates,
    adaptive_zoomin,
    fixed_zoomin,
    logit_projection,
    round_variance,
    tolerance_for_cost,
    zoomin_fresh,
    zoomin_pilot,
)
from zoomin_lib.models import ZoomInNet, module_device
from zoomin_lib.train.loop import binary_auc, evaluating
from zoomin_lib.wsi.predict import SlideZoomIn

__all__ = ["NComparison", "compare_on_images", "compare_on_slides", "method_rows", "class_rows", "image_rows",
           "n_figure"]


@dataclass
class NComparison:
    """Both rules on the same test images, `repeats` estimates each: margins and costs [I, R] per rule."""

    n: int  # the fixed N, and the adaptive rule's mean cost
    round_size: int
    pilot: int
    budget: int  # rounds, pilot included: at most round_size * budget patches an image
    tol: float
    labels: np.ndarray  # [I]
    names: list[str]
    margin: dict[str, np.ndarray]  # rule -> [I, R] logit_1 - logit_0
    patches: dict[str, np.ndarray]  # rule -> [I, R] patches read, pilot included
    tile_views: dict[str, np.ndarray]  # rule -> [I, R] beta^c computed
    cpu_seconds: float  # process time of both rules (and of the exact mode, when computed)
    exact_margin: np.ndarray | None = None  # [I] the exact model's margin (eq. 5), where affordable
    rules: list[str] = field(default_factory=list)

    @property
    def fixed(self) -> str:
        return self.rules[0]

    @property
    def adaptive(self) -> str:
        return self.rules[1]

    def mean_patches(self, rule: str | None = None, label: int | None = None) -> float:
        """Patches read per estimate, pilot included, by `rule` (default: the adaptive one), averaged over every
        image and repeat, or over the images of class `label` only."""
        patches = self.patches[self.adaptive if rule is None else rule]  # [I, R]
        return float(patches.mean() if label is None else patches[self.labels == label].mean())


def _rule_names(n: int, round_size: int, pilot: int) -> list[str]:
    return [f"fixed N = {n}", f"adaptive N (rounds of {round_size}, pilot {pilot})"]


def _margin(est: ZoomInEstimates) -> np.ndarray:
    """logit_1 - logit_0 [B, R]."""
    return (est.logits[..., 1] - est.logits[..., 0]).double().cpu().numpy()


def _collect(parts: Sequence[tuple[ZoomInEstimates, ZoomInEstimates]]) -> tuple[dict, dict, dict]:
    """Margins, patches and tile views [I, R] of each rule from per-batch (fixed, adaptive) estimates."""
    out: tuple[dict, dict, dict] = ({}, {}, {})
    for k in range(2):
        out[0][k] = np.concatenate([_margin(p[k]) for p in parts])
        out[1][k] = np.concatenate([p[k].patches.cpu().numpy() for p in parts])
        out[2][k] = np.concatenate([p[k].tile_views.cpu().numpy() for p in parts])
    return out


def _comparison(n: int, round_size: int, pilot: int, budget: int, tol: float, labels: Sequence[int],
                names: Sequence[str], parts: Sequence[tuple[ZoomInEstimates, ZoomInEstimates]], seconds: float,
                exact: np.ndarray | None) -> NComparison:
    margin, patches, views = _collect(parts)
    rules = _rule_names(n, round_size, pilot)
    return NComparison(n, round_size, pilot, budget, tol, np.asarray(labels, dtype=int), list(names),
                       {rules[k]: margin[k] for k in range(2)}, {rules[k]: patches[k] for k in range(2)},
                       {rules[k]: views[k] for k in range(2)}, seconds, exact, rules)


def compare_on_images(model: ZoomInNet, x: Tensor, labels: Sequence[int], names: Sequence[str], n: int, *,
                      round_size: int, pilot: int, budget: int, repeats: int, seed: int, min_rounds: int = 1,
                      exact: bool = False) -> NComparison:
    """Fixed N and the adaptive rule at the same mean cost on images x [I, C, H, W], `repeats` estimates each.

    With `exact`, also the exact margin of eq. 5 (every sub-tile of every tile: only for small images).
    """
    began = time.process_time()
    gen = torch.Generator(device=module_device(model)).manual_seed(seed)  # draws where the probabilities are
    with evaluating(model):
        fixed = fixed_zoomin(model, x, n, repeats=repeats, generator=gen)
        adaptive = adaptive_zoomin(model, x, round_size=round_size, pilot=pilot, budget=budget, mean_patches=n,
                                   min_rounds=min_rounds, project=logit_projection(model, margin=True),
                                   repeats=repeats, generator=gen)
        exact_margin = None
        if exact:
            logits = model(x, mode="exact").logits  # [I, 2]
            exact_margin = (logits[:, 1] - logits[:, 0]).double().cpu().numpy()
    return _comparison(n, round_size, pilot, budget, adaptive.tol, labels, names, [(fixed, adaptive)],
                       time.process_time() - began, exact_margin)


def compare_on_slides(model: SlideZoomIn, paths: Sequence[Any], labels: Sequence[int], names: Sequence[str], n: int,
                      *, round_size: int, pilot: int, budget: int, repeats: int, seed: int,
                      min_rounds: int = 1) -> NComparison:
    """Fixed N and the adaptive rule at the same mean cost on slides, `repeats` estimates of each.

    Every slide's pilot is drawn first (its source kept open: alpha and the reader, a few MiB), one tolerance
    is set from all of them, then each slide's fresh rounds and its fixed-N estimates are drawn.
    """
    began = time.process_time()
    gen = torch.Generator(device=module_device(model)).manual_seed(seed)  # draws where the probabilities are
    net = model.net
    project = logit_projection(net, margin=True)
    readers = [model.open(p) for p in paths]
    sources = [model.source(r, strips=True) for r in readers]
    try:
        with evaluating(model):
            pilots = [zoomin_pilot(net, s, round_size=round_size, pilot=pilot, repeats=repeats, generator=gen)
                      for s in sources]
            s2 = torch.cat([round_variance(p.rounds, project) for p in pilots])  # [I * R]
            tol = tolerance_for_cost(s2, n / round_size - pilot, min_rounds, budget - pilot)
            parts = [(fixed_zoomin(net, s, n, repeats=repeats, generator=gen),
                      zoomin_fresh(net, p, tol, budget, min_rounds=min_rounds, project=project, generator=gen))
                     for s, p in zip(sources, pilots)]
    finally:
        for s, r in zip(sources, readers):
            s.close()
            r.close()
    return _comparison(n, round_size, pilot, budget, tol, labels, names, parts, time.process_time() - began, None)


def _accuracies(margin: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of each repeat [R]."""
    return ((margin > 0).astype(int) == labels[:, None]).mean(axis=0)


def method_rows(c: NComparison) -> list[dict[str, Any]]:
    """Per rule: patches and tile views per image, accuracy (mean over repeats, its s.e.), AUC, the margin's spread."""
    rows = []
    both = len(set(c.labels.tolist())) == 2
    for rule in c.rules:
        m, acc = c.margin[rule], _accuracies(c.margin[rule], c.labels)
        sd = m.std(axis=1, ddof=1)  # [I]
        row = {"rule": rule, "patches read per image (mean)": float(c.patches[rule].mean()),
               "N min-max": f"{int(c.patches[rule].min())}-{int(c.patches[rule].max())}",
               "tile views per image": float(c.tile_views[rule].mean()),
               "accuracy %": 100 * float(acc.mean()), "s.e. (repeats)": 100 * float(acc.std(ddof=1) / math.sqrt(len(acc)))}
        if both:
            row["AUC"] = float(np.mean([binary_auc(m[:, j], c.labels) for j in range(m.shape[1])]))
        row["margin variance (mean over images)"] = float((sd**2).mean())
        row["worst image's margin s.d."] = float(sd.max())
        if c.exact_margin is not None:
            row["decisions unlike exact %"] = 100 * float(((m > 0) != (c.exact_margin[:, None] > 0)).mean())
            row["margin MSE vs exact"] = float(((m - c.exact_margin[:, None]) ** 2).mean())
        rows.append(row)
    return rows


def class_rows(c: NComparison, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per class: images, the adaptive rule's mean N, and each rule's mean margin s.d."""
    rows = []
    for k, name in enumerate(classes):
        sel = c.labels == k
        if not sel.any():
            continue
        rows.append({"class": name, "images": int(sel.sum()),
                     "adaptive N (mean)": float(c.patches[c.adaptive][sel].mean()),
                     **{f"margin s.d., {rule}": float(c.margin[rule][sel].std(axis=1, ddof=1).mean()) for rule in c.rules}})
    return rows


def image_rows(c: NComparison) -> list[dict[str, Any]]:
    """Per image: label, the adaptive rule's mean N (min-max over repeats), each rule's margin mean and s.d."""
    rows = []
    for i, name in enumerate(c.names):
        n_i = c.patches[c.adaptive][i]
        row: dict[str, Any] = {"image": name, "label": int(c.labels[i]), "adaptive N": float(n_i.mean()),
                               "N min-max": f"{int(n_i.min())}-{int(n_i.max())}"}
        if c.exact_margin is not None:
            row["exact margin"] = float(c.exact_margin[i])
        for rule, short in zip(c.rules, ("fixed", "adaptive")):
            row[f"margin ({short})"] = float(c.margin[rule][i].mean())
            row[f"s.d. ({short})"] = float(c.margin[rule][i].std(ddof=1))
        rows.append(row)
    return rows


def n_figure(c: NComparison, classes: Sequence[str], title: str) -> Figure:
    """Left: the adaptive rule's N over every estimate, by class. Right: each image's margin s.d., fixed against adaptive."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    n = c.patches[c.adaptive]
    bins = np.arange(n.min(), n.max() + 2 * c.round_size, c.round_size) - 0.5 * c.round_size
    for k, name in enumerate(classes):
        sel = c.labels == k
        if sel.any():
            left.hist(n[sel].ravel(), bins=bins, alpha=0.6, label=f"{name} ({int(sel.sum())} images)")
    left.axvline(c.n, color="k", ls="--", lw=1, label=f"fixed N = {c.n}")
    left.set_xlabel("patches read, pilot included")
    left.set_ylabel(f"estimates ({n.shape[1]} per image)")
    left.legend(fontsize=7)
    sd = {rule: c.margin[rule].std(axis=1, ddof=1) for rule in c.rules}
    top = 1.05 * max(float(v.max()) for v in sd.values())
    for k, name in enumerate(classes):
        sel = c.labels == k
        right.scatter(sd[c.fixed][sel], sd[c.adaptive][sel], s=18, label=name)
    right.plot([0, top], [0, top], "k:", lw=1)
    right.set_xlabel(f"margin s.d., {c.fixed}")
    right.set_ylabel("margin s.d., adaptive N")
    right.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
