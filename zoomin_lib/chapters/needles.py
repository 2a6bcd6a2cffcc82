"""Chapter 05 (NeedleCamelyon): the machinery behind its cells, so that each cell reads as one step.

Zoom-In sec. 4 ("NeedleCamelyon"), appendix D (the crops: a whole metastasis covering 0.1-1 % of a
1024x1024 crop, after Pawlowski et al.'s *Needles in haystacks* [37]), appendices F and G (tiles,
training); table 1 (accuracy, memory, FLOPs of Zoom-In, ATS-30 and a BagNet) and figures 3 and 6b
(where the models look).

- data: `crop_stats`, `crop_loader`, `one_per_metastasis`, `examples_figure` (with `metastasis_outline`);
- methods and training: `bagnet_name`, `method_factories`, `train_settings`, `train_methods`;
- cost: `full_resolution_bagnet`, `paper_settings`, `memory_ratios`;
- why nothing learned: `split_sources`, `background_share`, `crop_statistic_rows` (what besides the metastasis tells a split's classes
  apart), `before_training` and `before_after_rows` (the same networks with their initial weights, against trained),
  `auc_by_predictor` (the top-N predictor against the mean of draws, on each split);
- figures: `attention_figure`, `mask_box`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from data_prep.needle_camelyon import NeedleCamelyon
from zoomin_lib import builders
from zoomin_lib.book.plotting import show_attention
from zoomin_lib.chapters.attention import attention_map, attention_on_objects
from zoomin_lib.chapters.bagnet import bagnet, evidence_map
from zoomin_lib.infra.slides import MIN_SATURATION, hsv_saturation
from zoomin_lib.models import CNNBaseline
from zoomin_lib.steps import predictor
from zoomin_lib.train.loop import binary_auc, evaluate
from zoomin_lib.train.protocol import (TrainSettings, channel_stats, image_tensor, initial_model, lazy_batches, run_method,
                                      standardized_image)

__all__ = [
    "C", "PAPER_SIDE", "PAPER_RUN", "FULL_BAGNET", "crop_stats", "crop_loader", "metastasis_outline",
    "one_per_metastasis", "examples_figure", "bagnet_name", "method_factories", "train_settings", "train_methods",
    "full_resolution_bagnet", "paper_settings", "memory_ratios", "split_sources", "background_share", "crop_statistic_rows",
    "before_training", "before_after_rows", "auc_by_predictor", "attention_figure", "mask_box",
]

C = dict(in_channels=3, n_classes=2)  # RGB crops, metastasis or not
PAPER_SIDE = 1024  # the paper's crops
PAPER_RUN = dict(train=6000, val=2000, test=2000, epochs=150, lr=1e-4)  # Zoom-In appendices D and G
FULL_BAGNET = "BagNet-33 s=1 (profile only)"  # the profile's BagNet on the full-resolution crop, profiled only


# ---------------------------------------------------------------------------------------------- data
def crop_stats(dataset: NeedleCamelyon) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [1, 3, 1, 1] of about 20 crops spread over `dataset` (no labels used)."""
    every = max(1, len(dataset) // 20)
    return channel_stats(torch.cat([image_tensor(dataset.image(i)) for i in range(0, len(dataset), every)]))


def crop_loader(dataset: NeedleCamelyon, in_memory: bool,
                stats: tuple[torch.Tensor, torch.Tensor]) -> Callable[[Sequence[int]], torch.Tensor]:
    """load(indices) -> standardized crops [b, 3, S, S]; uint8 crops held in memory when `in_memory`."""
    held = [dataset.image(i) for i in range(len(dataset))] if in_memory else None  # [S, S, 3] uint8 each
    read = (lambda i: held[i]) if in_memory else dataset.image
    return lambda idx: torch.cat([standardized_image(read(int(i)), stats) for i in idx])  # [b, 3, S, S]


def metastasis_outline(ax: Any, mask: np.ndarray) -> None:
    """Draw the metastasis mask's outline in cyan."""
    if mask.any():
        ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)


def one_per_metastasis(dataset: NeedleCamelyon, k: int) -> list[int]:
    """The first positive crop of each of the first k metastases of a split (its crops overlap one another)."""
    first = {}
    for i in np.flatnonzero(dataset.labels == 1):
        first.setdefault(dataset.rows[int(i)]["metastasis"], int(i))
    return list(first.values())[:k]


def examples_figure(dataset: NeedleCamelyon, title: str) -> Any:
    """Two positive crops (of different metastases) and two negative ones, each with its ratio and outline."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    shown = one_per_metastasis(dataset, 2) + [int(i) for i in np.flatnonzero(dataset.labels == 0)[:2]]
    for ax, i in zip(axes, shown):
        row = dataset.rows[int(i)]
        show_attention(ax, dataset.image(int(i)), title=f"{row['slide_id']}: "
                       f"{'positive' if row['label'] == '1' else 'negative'}, ratio {100 * float(row['ratio']):.2f} %")
        metastasis_outline(ax, dataset.mask(int(i)))
    fig.suptitle(title, fontsize=9)
    return fig


# ------------------------------------------------------------------------------ methods and training
def bagnet_name(bagnet_settings: Mapping[str, Any]) -> str:
    """'BagNet-33', with the scale of its view when it is not the full-resolution crop."""
    return "BagNet-33" + ("" if bagnet_settings["scale"] == 1 else f" s={bagnet_settings['scale']}")


def method_factories(cfg: Mapping[str, Any]) -> dict[str, Callable[[], nn.Module]]:
    """Table 1's methods with the profile's tiles, sub-tiles and N: Zoom-In, Zoom-In (Res), ATS-N and the BagNet."""
    n, p, tile = cfg["n_patches"], cfg["patch"], cfg["tile"]
    return {
        "Zoom-In": lambda: builders.zoomin(**C, scale1=0.25, scale2=0.5, tile_size=tile, patch_size=p, n_patches=n),
        "Zoom-In (Res)": lambda: builders.zoomin(**C, scale1=0.25, scale2=0.5, tile_size=tile, patch_size=p,
                                                 n_patches=n, backbone="resnet16"),
        f"ATS-{n}": lambda: builders.ats(**C, scale=0.5, patch_size=p, n_patches=n),
        bagnet_name(cfg["bagnet"]): lambda: bagnet(**C, **cfg["bagnet"]),
    }


def train_settings(cfg: Mapping[str, Any], names: Sequence[str]) -> dict[str, TrainSettings]:
    """The profile's training settings for each method; the BagNet trains `bagnet_epochs` without the contrastive loss."""
    settings = {name: TrainSettings(epochs=cfg["epochs"], batch_size=cfg["batch"], lr=cfg["lr"],
                                    warmup_epochs=cfg["warmup"], cosine_decay=cfg["cosine"]) for name in names}
    settings[bagnet_name(cfg["bagnet"])] = TrainSettings(epochs=cfg["bagnet_epochs"], batch_size=cfg["batch"],
                                                         lr=cfg["lr"], cosine_decay=cfg["cosine"])
    return settings


def train_methods(
    methods: Mapping[str, Callable[[], nn.Module]],
    settings: Mapping[str, TrainSettings],
    load_train: Callable[[Sequence[int]], torch.Tensor],
    load_test: Callable[[Sequence[int]], torch.Tensor],
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    batch: int,
    seed: int,
    out: Path,
    resume: bool,
    record: Mapping[str, Any],
) -> tuple[dict[str, list], dict[str, nn.Module], dict[str, float]]:
    """Train and test each method on the same mini-batches (one seed): (results, trained models, seconds) by name.

    Results are lists of one run (the form `chapters.results.result_rows` reads); checkpoints under `out`
    record `record` (what must match for a resume). A line per method gives its test accuracy and AUC.
    """
    results, trained, train_seconds = {}, {}, {}
    for name, factory in methods.items():
        start = time.perf_counter()
        result, model = run_method(
            name, factory, settings[name],
            lazy_batches(load_train, train_labels, batch, seed),
            lazy_batches(load_test, test_labels, 8, seed, shuffle=False)(0),
            run_seed=seed, tag=f"{name}_r0_f0", out_dir=out, resume=resume, record=dict(record),
        )
        results[name], trained[name], train_seconds[name] = [result], model, time.perf_counter() - start
        print(f"{name}: test accuracy {result.accuracy:.3f}, AUC {result.auc:.3f} ({train_seconds[name]:.0f} s)")
    return results, trained, train_seconds


# ---------------------------------------------------------------------------------------------- cost
def full_resolution_bagnet(bagnet_settings: Mapping[str, Any]) -> CNNBaseline:
    """The profile's BagNet on the full-resolution crop (s = 1), untrained: for profiling only."""
    return bagnet(**C, **{**bagnet_settings, "scale": 1.0})


def paper_settings(bagnet_settings: Mapping[str, Any]) -> dict[str, nn.Module]:
    """The paper's Zoom-In, Zoom-In (Res) and ATS-30 (untrained), with this profile's BagNet on the full-resolution crop."""
    return {
        "Zoom-In": builders.zoomin(**C, scale1=0.25, scale2=0.5, tile_size=256, patch_size=32, n_patches=30),
        "Zoom-In (Res)": builders.zoomin(**C, scale1=0.25, scale2=0.5, tile_size=256, patch_size=32, n_patches=30,
                                         backbone="resnet16"),
        "ATS-30": builders.ats(**C, scale=0.5, patch_size=32, n_patches=30),
        FULL_BAGNET: full_resolution_bagnet(bagnet_settings),
    }


def memory_ratios(costs: Mapping[str, Mapping[str, Any]], bagnet: str,
                  paper: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 1's memory ratios, measured (`costs`' peaks; `bagnet`: the full-resolution BagNet's key) and the paper's."""
    zoom_mb, res_mb = costs["Zoom-In"]["peak_memory_mb"], costs["Zoom-In (Res)"]["peak_memory_mb"]
    ats_mb, bag_mb = costs["ATS-30"]["peak_memory_mb"], costs[bagnet]["peak_memory_mb"]
    return [
        {"ratio": "Zoom-In / ATS-30", "measured here": zoom_mb / ats_mb,
         "paper (table 1)": paper["Zoom-In"]["memory_mb"] / paper["ATS-30"]["memory_mb"]},
        {"ratio": "Zoom-In (Res) / ATS-30", "measured here": res_mb / ats_mb,
         "paper (table 1)": paper["Zoom-In (Res)"]["memory_mb"] / paper["ATS-30"]["memory_mb"]},
        {"ratio": "Zoom-In / BagNet (full resolution)", "measured here": zoom_mb / bag_mb,
         "paper (table 1)": paper["Zoom-In"]["memory_mb"] / paper["BagNet"]["memory_mb"]},
    ]


# ------------------------------------------------------------------------------------ why nothing learned
def background_share(image: np.ndarray) -> float:
    """The share of an RGB uint8 crop [S, S, 3] that is background: HSV saturation below `tissue_mask`'s floor."""
    return float((hsv_saturation(np.asarray(image)) < MIN_SATURATION).mean())


def split_sources(data: NeedleCamelyon) -> dict[str, int]:
    """How many normal slides a split's negatives are cut from, and how many metastases its positives hold."""
    labels = np.asarray(data.labels).astype(int)  # [n]
    return {"negative slides": len({r["slide_id"] for r, y in zip(data.rows, labels) if y == 0}),
            "metastases": len({r["metastasis"] for r, y in zip(data.rows, labels) if y == 1})}


def crop_statistic_rows(splits: Mapping[str, NeedleCamelyon]) -> list[dict[str, Any]]:
    """Per split, two whole-crop statistics that are not the metastasis, and how well each tells the classes apart.

    `splits` maps a split's name to its crops (`image(i)` uint8 [S, S, 3], `labels` [n] with 1 = metastasis).
    A row: the split, its crops, each class's mean share of background (`background_share`) and mean brightness
    (0-255 over pixels and channels), and each statistic's AUC as a score for "metastasis" (0.5: no help; above:
    the positives tend to have more of it; below: less).
    """
    rows = []
    for split, data in splits.items():
        y = np.asarray(data.labels).astype(int)  # [n]
        images = [data.image(i) for i in range(len(y))]
        background = np.array([background_share(a) for a in images])  # [n]
        brightness = np.array([float(np.mean(a)) for a in images])  # [n]
        pos, neg = y == 1, y == 0
        rows.append({"split": split, "crops": len(y),
                     "background, positives": background[pos].mean(), "background, negatives": background[neg].mean(),
                     "AUC of background": binary_auc(background, y),
                     "brightness, positives": brightness[pos].mean(), "brightness, negatives": brightness[neg].mean(),
                     "AUC of brightness": binary_auc(brightness, y)})
    return rows


def before_training(
    factories: Mapping[str, Callable[[], nn.Module]],
    load: Callable[[Sequence[int]], torch.Tensor],
    labels: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    boxes: Sequence[Sequence[tuple[float, float, float, float]]],
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Each network with the weights it starts training from: its test AUC and where its attention lands.

    `initial_model` builds each as `run_method` does before training (seed everything with `seed`, then build
    on the host), so these are the initial weights of the trained model of the same name. The AUC
    uses the model's own predictor (top-N for the sampling models) on the crops `load` reads with `labels`;
    the attention row is `attention_on_objects` on `inputs` (crops [1, 3, S, S] with an object each) with their
    `boxes` ((x0, y0, x1, y1), full-resolution pixels). Runs on the host, as the chapter's other analyses.
    """
    out = {}
    for name, factory in factories.items():
        model, generator = initial_model(factory, seed, "cpu")
        model.eval()
        metrics = evaluate(model, lazy_batches(load, labels, 8, seed, shuffle=False)(0), predictor(generator=generator))
        seen = attention_on_objects({name: model}, inputs, boxes)[0] if inputs else {}
        out[name] = {"auc": metrics["auc"], **seen}
    return out


def before_after_rows(before: Mapping[str, Mapping[str, Any]], after_auc: Mapping[str, float | None],
                      after_attention: Sequence[Mapping[str, Any]], n_patches: int) -> list[dict[str, Any]]:
    """A row per method in `before`: test AUC, attention mass / uniform and peak on the metastasis, initial and trained.

    `after_auc` holds the trained models' test AUCs by name, `after_attention` their `attention_on_objects`
    rows (a method missing from either gets NaN there). "N x mass" is `n_patches` times the map's mass on the
    object's box: the expected number of the N draws whose centre falls in the box if they were independent
    draws from the map. The models draw without replacement (ATS its N locations, Zoom-In the sub-tiles within
    a tile), which raises the later draws' chances on what is left; while no location holds much of the mass
    the expected count stays close to it.
    """
    after = {r["method"]: r for r in after_attention}
    nan = float("nan")
    rows = []
    for name, b in before.items():
        a = after.get(name, {})
        auc = after_auc.get(name)
        rows.append({"method": name, "AUC, initial": nan if b["auc"] is None else b["auc"],
                     "AUC, trained": nan if auc is None else auc,
                     "mass / uniform, initial": b.get("mass / uniform", nan),
                     "mass / uniform, trained": a.get("mass / uniform", nan),
                     "peak on it %, initial": b.get("peak on the object %", nan),
                     "peak on it %, trained": a.get("peak on the object %", nan),
                     "N x mass, initial": n_patches * b.get("mass on the object", nan),
                     "N x mass, trained": n_patches * a.get("mass on the object", nan)})
    return rows


def auc_by_predictor(
    models: Mapping[str, nn.Module],
    splits: Mapping[str, tuple[Callable[[Sequence[int]], torch.Tensor], torch.Tensor]],
    draws: int,
    seed: int,
) -> list[dict[str, Any]]:
    """A row per model and split: the AUC with the model's top-N predictor and with the mean of `draws` draws.

    `splits` maps a split's name to (load, labels). The mean of draws (`steps.predictor("sample", draws=...)`)
    is the prediction closest to what training takes its loss on (one draw); top-N is what the test reads.
    """
    rows = []
    for name, model in models.items():
        for split, (load, labels) in splits.items():
            batches = lazy_batches(load, labels, 8, seed, shuffle=False)  # read batch by batch, once per predictor
            top = evaluate(model, batches(0), predictor(generator=torch.Generator().manual_seed(seed)))
            drawn = evaluate(model, batches(0), predictor("sample", torch.Generator().manual_seed(seed), draws=draws))
            rows.append({"method": name, "split": split, "crops": len(labels), "AUC, top-N": top["auc"],
                         f"AUC, mean of {draws} draws": drawn["auc"]})
    return rows


# ------------------------------------------------------------------------------------------- figures
def attention_figure(models: Mapping[str, nn.Module], positives: Sequence[int], dataset: NeedleCamelyon,
                     load: Callable[[Sequence[int]], torch.Tensor], title: str) -> Any:
    """Figure 6b, a row per crop: the crop, then Zoom-In's, ATS's attention with their top-N, then the BagNet's evidence.

    `models` holds, in this order, a Zoom-In, an ATS and a BagNet (in eval mode), by the names the titles show;
    the metastasis is outlined in cyan on every panel.
    """
    import matplotlib.pyplot as plt

    (zoom_name, zoom), (ats_name, ats), (bag_name, bag) = models.items()
    fig, axes = plt.subplots(len(positives), 4, figsize=(13, 3.3 * len(positives)), squeeze=False)
    with torch.no_grad():
        for row, i in zip(axes, positives):
            xi, image, mask = load([i]), dataset.image(i), dataset.mask(i)  # xi [1, 3, S, S]
            zo, ao = zoom(xi, mode="topk"), ats(xi, mode="topk")
            panels = [
                (None, None, None, f"{dataset.rows[i]['slide_id']} (positive)"),
                (attention_map(zoom, xi)[0], zo.centers[0], zoom.patch_size,
                 f"{zoom_name}, p(meta) = {torch.softmax(zo.logits, 1)[0, 1]:.2f}"),
                (attention_map(ats, xi)[0], ao.centers[0], ats.patch_size,
                 f"{ats_name}, p(meta) = {torch.softmax(ao.logits, 1)[0, 1]:.2f}"),
                (evidence_map(bag, xi)[0], None, None, f"{bag_name}, p(meta) = {torch.softmax(bag(xi).logits, 1)[0, 1]:.2f}"),
            ]
            for ax, (att, centers, patch, caption) in zip(row, panels):
                show_attention(ax, image, None if att is None else att.numpy(),
                               centers=None if centers is None else centers.numpy(), patch_size=patch, title=caption)
                metastasis_outline(ax, mask)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def mask_box(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The bounding box (x0, y0, w, h) of a mask's pixels (none for an empty mask)."""
    rows, cols = np.nonzero(mask)
    return [] if rows.size == 0 else [(cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)]
