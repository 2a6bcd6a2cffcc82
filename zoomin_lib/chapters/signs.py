"""Chapters 06 (road scenes) and 07 (fMoW): the methods trained one after another, Zoom-In + boxes, figures.

Both chapters train the same way: every method of a table on the same lazily read mini-batches
(`train.protocol.run_method`), then a Zoom-In that also learns from the box of the object that
gives the label (`BOXES`; not in the papers): a, b and f pre-trained on the box
(`train.supervision.pretrained_from_boxes`, as appendix L does with Camelyon16's outlines), then
the attention cross-entropy against it during training (`box_weight`). The figures of where Zoom-In
looks follow Zoom-In fig. 3: the tile of highest alpha, its sub-tile of highest beta, and that
sub-tile at full resolution.

Chapter 06's own pieces (ATS sec. 4.4, Zoom-In sec. 4 and appendix G) are its image loader and its
figure of one road scene per class, and what the IPS thesis (file 003) measures on traffic signs:
IPS itself (sec. 2.7; `ips_factory`) and one run per study (`IPSVariant`) against it:
- Semantic + Diversity regularisation (sec. 3.3, 4.5, table 7): each attention head's own MLP and
  cross-entropy L_p (eq. 12), and w L_d, the heads' mean pairwise cosine similarity (eq. 10), added to
  the loss (eq. 13; `ips.regulariser_terms`). Weight 0 is plain IPS, L_p off too, as in the thesis.
- Stochastic Top-K Instance Masking (sec. 3.4, 4.6, table 9): in training, each of the K patches of
  highest attention logit masked with probability P (`IPSNet(mask_top_k, mask_prob)`).
- the patch side (sec. 4.3, table 3), with M fixed, against the side of the signs (`sign_sides`).
Each variant differs from the baseline IPS in one setting only, and is trained on the same mini-batches
from the same seed. Chapter 07's pieces are in `chapters.fmow`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from data_prep import traffic_signs
from zoomin_lib import builders
from zoomin_lib.book.plotting import save_figure, show_attention, zoom_grid
from zoomin_lib.chapters.attention import zoom_picks
from zoomin_lib.chapters.megapixel import StridedLeNet
from zoomin_lib.chapters.per_class import present_classes
from zoomin_lib.chapters.results import beats, beats_chance
from zoomin_lib.ips import IPSNet, regulariser_terms
from zoomin_lib.steps import ExtraTerm
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
    "IPSVariant",
    "ips_variants",
    "ips_factory",
    "sign_sides",
    "diversity_rows",
    "stkim_rows",
    "patch_rows",
    "ips_verdicts",
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
    extra_terms: Mapping[str, Mapping[str, ExtraTerm]] | None = None,
) -> tuple[dict[str, list[FoldResult]], dict[str, nn.Module]]:
    """Train and test each method in turn on the same mini-batches; (name -> [its result], name -> trained model).

    Training batches of `batch` images come in the order of (seed, epoch), test batches of 8 in a
    fixed order; `BOXES` also gets the box masks of its images (`box_masks(indices)`). With
    `images_of_any_size`, a batch is a list of [1, C, H_i, W_i] images and the loss and the
    predictions are taken image by image (`per_image`). `extra_terms` (method name -> its terms,
    e.g. `IPSVariant.extra_terms()`) are added to that method's loss. Each method's test accuracy is
    printed; runs and checkpoints go under `out` (tag `<name>_r0_f0`).
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
            run_seed=seed, tag=f"{name}_r0_f0", out_dir=out, resume=resume, record=record,
            extra_terms=(extra_terms or {}).get(name), **sizes,
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


def batch_loader(data: traffic_signs.TrafficSigns, index: np.ndarray, stats: tuple[Tensor, Tensor],
                 cache_bytes: int = 0) -> Loader:
    """positions -> images data[index[positions]] read from disk and standardized with `stats`, [b, 3, H, W].

    With `cache_bytes` > 0 each image is decoded once, when first asked for, and kept in memory as
    uint8 [3, H, W] while the kept images stay within `cache_bytes` (the rest are read from disk each
    time): the epochs after the first decode nothing. The batch is the same either way
    (`data.load_batch`'s uint8 / 255, then `standardize`).
    """
    kept: dict[int, Tensor] = {}
    used = [0]

    def image(k: int) -> Tensor:  # uint8 [3, H, W]
        if k in kept:
            return kept[k]
        u = torch.from_numpy(np.ascontiguousarray(data.read_image(k).transpose(2, 0, 1)))
        if used[0] + u.numel() <= cache_bytes:
            kept[k] = u
            used[0] += u.numel()
        return u

    def load(idx: Sequence[int]) -> Tensor:
        keys = [int(index[i]) for i in idx]
        if cache_bytes <= 0:
            return standardize(data.load_batch(keys), stats)
        images = [image(k) for k in keys]
        shapes = {tuple(u.shape) for u in images}
        if len(shapes) > 1:
            raise ValueError(f"images of different sizes cannot be batched: {sorted(shapes)}")
        mean, std = stats
        return torch.stack(images).float().div_(255.0).sub_(mean).div_(std)  # [b, 3, H, W], as standardize

    return load


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


# ----------------------------------------------------------------------------------------------------
# Chapter 06: IPS and the thesis's studies on traffic signs (file 003, sec. 4.3, 4.5, 4.6)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IPSVariant:
    """One IPS run of the studies: its patch side (px), the weight w of L_d (L_p on when w > 0), STKIM's K and P."""

    patch: int
    diversity: float = 0.0
    mask_top_k: int = 0
    mask_prob: float = 0.0

    @property
    def study(self) -> str:
        """Which study the variant belongs to: "diversity", "stkim", or "patch" (the baseline, too)."""
        return "diversity" if self.diversity else "stkim" if self.mask_top_k else "patch"

    def name(self, memory: int, base_patch: int) -> str:
        """Its table name: IPS-M (the baseline, patch `base_patch`) with what differs from the baseline."""
        base = f"IPS-{memory}"
        if self.diversity:
            return f"{base} + L_p + {self.diversity:g} L_d"
        if self.mask_top_k:
            return f"{base} + STKIM (K={self.mask_top_k}, P={self.mask_prob:g})"
        return base if self.patch == base_patch else f"{base} ({self.patch}x{self.patch})"

    def extra_terms(self) -> dict[str, ExtraTerm]:
        """The thesis's eq. 13 terms beyond the classification loss: L_p + w L_d when w > 0, else none."""
        return regulariser_terms(semantic=1.0, diversity=self.diversity) if self.diversity else {}


def ips_variants(patch: int, diversity: Sequence[float] = (), stkim: Sequence[tuple[int, float]] = (),
                 patches: Sequence[int] = ()) -> list[IPSVariant]:
    """The baseline IPS (patch `patch`, nothing else) first, then one variant per non-zero weight, (K, P) and other patch.

    Zero weights, K = 0 or P = 0 and the baseline's own patch are the baseline itself and give no extra run.
    """
    out = [IPSVariant(patch)]
    out += [IPSVariant(patch, diversity=float(w)) for w in diversity if w]
    out += [IPSVariant(patch, mask_top_k=int(k), mask_prob=float(p)) for k, p in stkim if k and p]
    out += [IPSVariant(int(q)) for q in patches if q != patch]
    return list(dict.fromkeys(out))  # once each, in order


def ips_factory(variant: IPSVariant, *, in_channels: int, n_classes: int, memory: int,
                iter_size: int) -> Callable[[], IPSNet]:
    """A factory of the variant's IPS: M = `memory` patches of its side read I = `iter_size` at a time.

    The patch encoder is chapter 09's `StridedLeNet` (any patch side; about 1,200 multiply-accumulates per
    pixel, which IPS pays on every pixel of the image); the transformer is the IPS code's (8 heads of 16,
    dropout 0.1), without the position encoding: which sign it is does not depend on where it stands.
    """
    return lambda: builders.ips(
        in_channels=in_channels, n_classes=n_classes, patch_size=variant.patch, memory_size=memory,
        iter_size=iter_size, encoder=StridedLeNet(in_channels), n_heads=8, dim_head=16, dropout=0.1,
        attn_dropout=0.1, semantic=variant.diversity > 0, mask_top_k=variant.mask_top_k, mask_prob=variant.mask_prob)


def sign_sides(boxes: Iterable[Sequence[tuple[float, float, float, float]]]) -> np.ndarray:
    """The side (px) of the smallest square holding each sign, max(width, height), over the boxes (x0, y0, x1, y1) of every image."""
    sides = [max(x1 - x0, y1 - y0) for image in boxes for x0, y0, x1, y1 in image]
    return np.asarray(sides, dtype=float)


def _last(run: FoldResult, key: str) -> float | str:
    """The last epoch's mean of a loss part, or "" when the run did not have that part."""
    return run.history[-1][key] if run.history and key in run.history[-1] else ""


def diversity_rows(results: Mapping[str, Sequence[FoldResult]], variants: Sequence[IPSVariant], memory: int,
                   thesis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table 7 beside what was measured: one row per weight w of L_d, measured (baseline as 0) or quoted, or both.

    Measured: the test accuracy, L_p and w L_d at the last epoch; quoted: table 7's mean and std over 5 seeds.
    """
    base = variants[0]
    measured = {0.0: base, **{v.diversity: v for v in variants if v.study == "diversity"}}
    rows = []
    for w in sorted({*measured, *thesis["rows"]}):
        v, paper = measured.get(w), thesis["rows"].get(w)
        row: dict[str, Any] = {"weight of L_d": f"{w:g}xD" + (" (IPS, L_p off)" if w == 0 else "")}
        name = v.name(memory, base.patch) if v else None
        row["accuracy % here"] = 100 * results[name][0].accuracy if v else ""
        row["L_p here (last epoch)"] = _last(results[name][0], "semantic") if v else ""
        row["w L_d here (last epoch)"] = _last(results[name][0], "diversity") if v else ""
        row["thesis: mean %"] = paper["val_mean"] if paper else ""
        row["thesis: std %"] = paper["val_std"] if paper else ""
        rows.append(row)
    return rows


def stkim_rows(results: Mapping[str, Sequence[FoldResult]], variants: Sequence[IPSVariant], memory: int,
               thesis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table 9 beside what was measured: one row per (K, P), (0, 0) being the baseline; the masking candidates min(K, M - 1)."""
    base = variants[0]
    measured = {(0, 0.0): base, **{(v.mask_top_k, v.mask_prob): v for v in variants if v.study == "stkim"}}
    rows = []
    for k, p in sorted({*measured, *thesis["rows"]}):
        v, paper = measured.get((k, p)), thesis["rows"].get((k, p))
        rows.append({
            "K": k, "P": p, "candidates here: min(K, M - 1)": min(k, memory - 1),
            "accuracy % here": 100 * results[v.name(memory, base.patch)][0].accuracy if v else "",
            "thesis: mean %": paper["val_mean"] if paper else "", "thesis: std %": paper["val_std"] if paper else "",
        })
    return rows


def patch_rows(results: Mapping[str, Sequence[FoldResult]], variants: Sequence[IPSVariant], memory: int,
               smallest: float, thesis: Mapping[str, Any],
               costs: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Table 3 beside what was measured: one row per patch side, its ratio to the smallest sign (here; the thesis's 27 px).

    Measured: test accuracy, and with `costs` (name -> `profile_methods` report) peak memory and time of
    one inference; quoted: table 3's validation and training accuracy, time per batch and peak memory.
    """
    base = variants[0]
    measured = {v.patch: v for v in variants if v.study == "patch"}
    rows = []
    for q in sorted({*measured, *thesis["rows"]}):
        v, paper = measured.get(q), thesis["rows"].get(q)
        name = v.name(memory, base.patch) if v else None
        cost = (costs or {}).get(name) if name else None
        rows.append({
            "patch (px)": q, "patch / smallest sign here": q / smallest if v else "",
            "accuracy % here": 100 * results[name][0].accuracy if v else "",
            "peak memory (MiB) here": cost["peak_memory_mb"] if cost else "",
            "time (ms) here": cost["ms_per_sample"] if cost else "",
            "patch / smallest sign (thesis)": q / thesis["smallest_sign_px"] if paper else "",
            "thesis: val mean ± std %": f"{paper['val_mean']:.1f} ± {paper['val_std']:.1f}" if paper else "",
            "thesis: train mean %": paper["train_mean"] if paper else "",
            "thesis: ms / batch": paper["ms_per_batch"] if paper else "",
            "thesis: peak GB": paper["peak_gb"] if paper else "",
        })
    return rows


def ips_verdicts(results: Mapping[str, Sequence[FoldResult]], variants: Sequence[IPSVariant], memory: int,
                 test_labels: Sequence[int] | np.ndarray, smallest: float) -> dict[str, Any]:
    """What the runs say about the thesis's conclusions on traffic signs, by the book's rules.

    - "majority": the always-EMPTY rate of the test labels; "learned": the runs beating it by 2 binomial
      standard errors (`results.beats_chance`).
    - "diversity gains", "stkim gains": the variants beating the baseline IPS by 3 standard errors of the
      difference (`results.beats`); "stkim losses": those the baseline beats so.
    - "patch accuracy": accuracy per measured patch side; "small patches win": the sides at most the
      smallest sign's that beat every larger measured side by 3 standard errors (empty when none do);
      "best patches": the sides of highest accuracy (more than one when they tie).
    - "one class for every image": the runs that predicted the same class (its index) for every test image.
    """
    labels = np.asarray(test_labels)
    n = labels.size
    majority = float(np.bincount(labels).max() / n)
    base = variants[0]
    acc = {v: results[v.name(memory, base.patch)][0].accuracy for v in variants}
    name = {v: v.name(memory, base.patch) for v in variants}
    gains = lambda study: {name[v]: acc[v] - acc[base] for v in variants  # noqa: E731
                           if v.study == study and beats(acc[v], n, acc[base], n)}
    by_patch = {v.patch: acc[v] for v in variants if v.study == "patch"}
    small, larger = [q for q in by_patch if q <= smallest], [q for q in by_patch if q > smallest]
    return {
        "majority": majority,
        "learned": {name[v]: acc[v] for v in variants if beats_chance(acc[v], majority, n)},
        "diversity gains": gains("diversity"),
        "stkim gains": gains("stkim"),
        "stkim losses": {name[v]: acc[base] - acc[v] for v in variants
                         if v.study == "stkim" and beats(acc[base], n, acc[v], n)},
        "patch accuracy": dict(sorted(by_patch.items())),
        "small patches win": [q for q in small if larger and all(beats(by_patch[q], n, by_patch[r], n)
                                                                  for r in larger)],
        "best patches": [q for q in sorted(by_patch) if by_patch[q] == max(by_patch.values())],
        "one class for every image": {name[v]: int(np.flatnonzero(cols)[0]) for v in variants
                                      if (cols := _predicted(results[name[v]][0])) is not None
                                      and np.count_nonzero(cols) == 1},
    }


def _predicted(run: FoldResult) -> np.ndarray | None:
    """How many test images the run assigned to each class (the column sums of its confusion), or None without one."""
    confusion = getattr(run, "confusion", None)
    return np.asarray(confusion).sum(axis=0) if confusion else None
