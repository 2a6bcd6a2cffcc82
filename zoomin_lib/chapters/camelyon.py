"""Chapter 04 (Camelyon16): the machinery behind its cells, so that each cell reads as one step.

Zoom-In sec. 4 (Camelyon16) with the tiles of appendix F, the training of appendix G and the
pixel-level annotations of appendix L (pre-trained a, b, f, then eq. 13 added to eq. 12); table 2's
columns (accuracy, memory per slide); figures 1 and 6 (attention over a slide, zooming in to a
sub-tile), figure 7 (attention against the metastasis-to-tile ratio, Spearman's rho); and the memory
analysis of sec. 2.1, measured on slides from 1e8 to 1e10 pixels against one-stage ATS (ATS sec. 3.3).

- data: `SlideData` / `slide_data` (the slides that open, split), `geometry_rows` (the profile next
  to the paper's settings);
- training: `slide_stats`, `slide_zoomin`, `roi_of`, `train_variants`, `pretraining_lines`;
- inference: `evaluate_variants`, `measured_rows`;
- figures: `SlideViews` / `slide_views`, `contours`, `attention_figure`, `zoom_in_figure`,
  `attention_vs_ratio`, `spearman_rows`;
- where training stopped: `training_figure` (eq. 12's cross-entropy and sec. 2.2's L_con per epoch),
  `term_study` (the plain model before training and trained without L_con), `plateau_facts`, `plateau_rows`;
- memory against slide size: `memory_sweep`, `MemoryCurve`, `memory_figure`, `memory_rows_table`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from data_prep import camelyon16, synthetic_slides
from zoomin_lib import builders
from zoomin_lib.book.report import format_cell
from zoomin_lib.geometry import tile_grid, view_size
from zoomin_lib.infra.config import data_dir as cache_dir
from zoomin_lib.models import module_device
from zoomin_lib.train.profiling import host_peak_memory, lean_inference
from zoomin_lib.train.protocol import image_stats, initial_model
from zoomin_lib.wsi.annotations import attention_roi_spearman, roi_tiles
from zoomin_lib.wsi.figures import show_slide
from zoomin_lib.wsi.predict import SlideATS, SlidePrediction, SlideZoomIn, evaluate_slides
from zoomin_lib.wsi.reader import SlideReader
from zoomin_lib.wsi.train import fit_slides, pretrain_tile_classifiers

__all__ = [
    "NAMES", "SlideData", "slide_data", "geometry_rows", "slide_stats", "roi_of", "slide_zoomin", "Training",
    "train_variants", "pretraining_lines", "Evaluation", "evaluate_variants", "measured_rows", "SlideViews",
    "slide_views", "contours", "attention_figure", "zoom_in_figure", "tile_attention_and_ratios",
    "attention_vs_ratio", "spearman_rows", "training_figure", "INITIAL", "NO_CON", "TermStudy", "term_study",
    "plateau_facts", "plateau_rows", "memory_sweep", "MemoryCurve", "memory_figure", "memory_rows_table",
]

# the methods of table 2 by (backbone, trained with annotations)
NAMES = {("lenet", False): "Zoom-In", ("resnet16", False): "Zoom-In (Res)", ("lenet", True): "Zoom-In + annotations",
         ("resnet16", True): "Zoom-In (Res) + annotations"}


# ---------------------------------------------------------------------------------------------- data
@dataclass
class SlideData:
    """The slides a run uses: label of the data, training / validation / test records, and every slide skipped."""

    label: str
    train: list[camelyon16.SlideRecord]
    validation: list[camelyon16.SlideRecord]
    test: list[camelyon16.SlideRecord]
    problems: list[str]

    def summary(self) -> str:
        """One line: how many slides of each split, tumour slides among the test ones, how many skipped."""
        return (f"{self.label}: {len(self.train)} training, {len(self.validation)} validation, {len(self.test)} test "
                f"slides ({sum(r.label for r in self.test)} test tumour slides); {len(self.problems)} skipped")


def slide_data(data_dir: str | Path | None, cfg: Mapping[str, Any], seed: int) -> SlideData:
    """Camelyon16 from `data_dir`, or the profile's synthetic stand-in; the slides that open, split into train/val/test.

    Prints each skipped slide with its reason; stops (ValueError) when no normal or no tumour training slide opens,
    and when the profile has no stand-in and no `data_dir` is given.
    """
    if data_dir is not None:
        root = data_dir
    elif cfg["synthetic"] is not None:
        root = synthetic_slides.synthetic_camelyon(cfg["synthetic"], seed=seed)
    else:
        raise ValueError("the 'paper' profile reads the real Camelyon16: pass -p data_dir /path/to/CAMELYON16")
    dataset = camelyon16.load_camelyon16(root, strict=False)
    label = "synthetic stand-in (not Camelyon16)" if synthetic_slides.read_parameters(root) else f"Camelyon16 ({root})"
    usable, bad = camelyon16.check_slides(dataset, tile_size=cfg["tile"])
    problems = dataset.problems + bad
    for p in problems:
        print("skipped:", p)
    train_all = [r for r in usable if r.split == "train"]
    camelyon16.require_classes(train_all, "training slides that open", problems)  # stops now, not after training
    test = [r for r in usable if r.split == "test"]
    train, validation = camelyon16.train_validation_split(camelyon16.Camelyon16(dataset.root, train_all),
                                                          cfg["val_fraction"], seed)
    return SlideData(label, list(train), list(validation), test, problems)


def geometry_rows(path: str | Path, cfg: Mapping[str, Any]) -> list[dict[str, str]]:
    """The profile's geometry on one slide (its size, pyramid, views, tiles, sub-tiles, training) beside the paper's."""
    with SlideReader(path) as first:
        W0, H0 = first.slide.dimensions
        levels = first.slide.level_dimensions
    training = (f"{cfg['epochs']} epochs, lr {cfg['lr']:g}, batch {cfg['batch']}, "
                f"contrastive from epoch {cfg['warmup']}")
    return [
        {"quantity": "slide (level 0)", "value": f"{W0} x {H0} = {W0 * H0 / 1e9:.2f} gigapixels",
         "paper": "45,056 x 35,840 to 217,088 x 111,104"},
        {"quantity": "pyramid levels", "value": str(len(levels)), "paper": "(Camelyon16 TIFFs: about 10)"},
        {"quantity": "V(x, s1)", "value": f"s1 = {cfg['s1']:.5g}: {view_size((H0, W0), cfg['s1'])}",
         "paper": "s1 = 0.03125"},
        {"quantity": "tiles", "value": f"{cfg['tile']}^2: grid {tile_grid((H0, W0), cfg['tile'])}", "paper": "3200^2"},
        {"quantity": "V(x, s2, c)", "value": f"s2 = {cfg['s2']:.5g}: {view_size((cfg['tile'],) * 2, cfg['s2'])}",
         "paper": "s2 = 0.125: (400, 400)"},
        {"quantity": "sub-tiles, N", "value": f"{cfg['patch']}^2, N = {cfg['n']}", "paper": "50^2, N = 100"},
        {"quantity": "training", "value": training,
         "paper": "200 epochs, lr 1e-4, batch 5, contrastive after 10, lambda 1e-5"},
    ]


# ------------------------------------------------------------------------------------------ training
def slide_stats(records: Sequence[camelyon16.SlideRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [1, 3, 1, 1] in [0, 1] units over the 512-pixel thumbnails of `records` (no labels)."""
    readers = [SlideReader(r.path) for r in records]
    stats = image_stats([s.thumbnail(512) for s in readers])
    for s in readers:
        s.close()
    return stats


def roi_of(record: camelyon16.SlideRecord) -> camelyon16.LesionROI | None:
    """The lesion annotation of a slide, or None."""
    return camelyon16.LesionROI.from_xml(record.annotation) if record.annotation is not None else None


def slide_zoomin(cfg: Mapping[str, Any], stats: tuple[torch.Tensor, torch.Tensor], backbone: str) -> SlideZoomIn:
    """A fresh Zoom-In network of the profile `cfg` on slides (it draws its initial weights from torch's generator)."""
    net = builders.zoomin(in_channels=3, n_classes=2, scale1=cfg["s1"], scale2=cfg["s2"], tile_size=cfg["tile"],
                          patch_size=cfg["patch"], n_patches=cfg["n"], backbone=backbone)
    return SlideZoomIn(net, stats, strip_pixels=cfg["strip_pixels"])


class Training(NamedTuple):
    """What `train_variants` returns, by method name."""

    models: dict[str, SlideZoomIn]
    histories: dict[str, list[dict[str, Any]]]  # one record per epoch
    pretraining: dict[str, dict[str, Any]]  # appendix L's pre-training (the variants with annotations)
    train_cpu: dict[str, float]  # CPU seconds, pre-training included


def checkpoint_name(name: str) -> str:
    """A method's name as a file name ('Zoom-In (Res) + annotations' -> 'Zoom-In_Res_+_annotations')."""
    return name.replace(" ", "_").replace("(", "").replace(")", "")


def train_variants(
    cfg: Mapping[str, Any],
    stats: tuple[torch.Tensor, torch.Tensor],
    readers: Sequence[SlideReader],
    *,
    seed: int,
    out: Path,
    resume: bool = False,
    suffix: str = "",
) -> Training:
    """Train each variant of the profile (backbones, without and with annotations), each from `seed`; a line each.

    `suffix` is added to each variant's name (and so to its checkpoint's), for a run in other settings.

    With annotations, a, b and f are first pre-trained as tile classifiers (appendix L) unless a checkpoint is
    resumed, and eq. 13's MSE joins eq. 12's loss (weight 1). Checkpoints go to `out/checkpoints/`.
    """
    variants = [(bb, False) for bb in cfg["variants"]] + ([(bb, True) for bb in cfg["variants"]] if cfg["pixel"] else [])
    models, histories, pretraining, train_cpu = {}, {}, {}, {}
    for backbone, pixel in variants:
        name = NAMES[(backbone, pixel)] + suffix
        # the initial weights drawn from `seed`, on the GPU when there is one
        model, generator = initial_model(partial(slide_zoomin, cfg, stats, backbone), seed)
        checkpoint = out / "checkpoints" / f"{checkpoint_name(name)}.pt"
        cpu0 = time.process_time()
        if pixel and not (resume and checkpoint.is_file()):
            pretraining[name] = pretrain_tile_classifiers(model, readers, steps=cfg["pretrain_steps"],
                                                          lr=cfg["pretrain_lr"], windows=cfg["pretrain_windows"],
                                                          generator=generator)
        histories[name] = fit_slides(model, readers, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch"],
                                     warmup_epochs=cfg["warmup"], lam=1e-5, pixel_weight=1.0 if pixel else 0.0,
                                     seed=seed, generator=generator, checkpoint_path=checkpoint, resume=resume,
                                     progress=False)
        train_cpu[name] = time.process_time() - cpu0
        models[name] = model
        last = histories[name][-1]
        print(f"{name}: {len(histories[name])} epochs, {train_cpu[name]:.0f} s CPU ({train_cpu[name] / max(1, cfg['epochs']):.1f} "
              f"s per epoch incl. pre-training), last epoch loss {last['loss']:.3f} (ce {last['ce']:.3f})")
    return Training(models, histories, pretraining, train_cpu)


def pretraining_lines(pretraining: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per pre-trained variant: its examples and, for a, b and f, first and last loss and training accuracy."""
    return [f"{name} pre-training on {info['tiles']} tiles ({info['positive_tiles']} with metastases) and "
            f"{info['subtiles']} sub-tiles: " + ", ".join(f"{k}: loss {v['first_loss']:.3f} -> {v['last_loss']:.3f}, "
                                                          f"training accuracy {v['train_accuracy']:.2f}"
                                                          for k, v in info["fits"].items())
            for name, info in pretraining.items()]


# ----------------------------------------------------------------------------------------- inference
class Evaluation(NamedTuple):
    """What `evaluate_variants` returns, by method name."""

    results: dict[str, dict[str, Any]]  # top-k metrics, sampling's accuracy and AUC, validation metrics
    predictions: dict[str, list[SlidePrediction]]  # top-k, one per test slide that was predicted
    memory: dict[str, dict[str, float]]  # mean peak (MiB) over the measured test slides


def _topk_on(model: SlideZoomIn, records: Sequence[camelyon16.SlideRecord]) -> tuple[dict[str, Any], list[SlidePrediction]]:
    """`model`'s top-k metrics and predictions on `records`, reading tiles one at a time; the slides it could not
    predict are printed."""
    with lean_inference(model.net):
        metrics, preds, failed = evaluate_slides(model, [r.path for r in records], [r.label for r in records], mode="topk")
    for p in failed:
        print("not predicted:", p)
    return metrics, preds


def evaluate_variants(
    models: Mapping[str, SlideZoomIn],
    test: Sequence[camelyon16.SlideRecord],
    validation: Sequence[camelyon16.SlideRecord],
    *,
    memory_slides: int,
    seed: int,
) -> Evaluation:
    """Each model on the test slides, top-k and sampled, and its peak host memory on the first `memory_slides`.

    Tiles and sub-tiles are read one at a time (`lean_inference`); slides that cannot be predicted are printed.
    """
    test_paths, test_labels = [r.path for r in test], [r.label for r in test]
    results, predictions, memory = {}, {}, {}
    for name, model in models.items():
        metrics, preds = _topk_on(model, test)
        with lean_inference(model.net):
            sampled, _, _ = evaluate_slides(model, test_paths, test_labels, mode="sample",
                                            generator=torch.Generator().manual_seed(seed))
            peaks = [host_peak_memory(lambda p=p: model.predict_one(p), module_device(model))
                     for p in test_paths[:memory_slides]]
        results[name] = {**metrics, "accuracy_sampling": sampled["accuracy"], "auc_sampling": sampled["auc"]}
        predictions[name] = preds
        memory[name] = {k: float(np.mean([m[k] for m in peaks])) for k in ("torch_mb", "numpy_mb", "sum_mb", "device_mb")
                        if k in peaks[0]}
        if validation:
            with lean_inference(model.net):
                results[name]["validation"] = evaluate_slides(model, [r.path for r in validation],
                                                              [r.label for r in validation])[0]
    return Evaluation(results, predictions, memory)


def measured_rows(results: Mapping[str, Mapping[str, Any]], memory: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """Table 2's columns as measured here: accuracy and AUC (top-k), sampling's accuracy, peak memory, time per slide."""
    return [{
        "method": name, "pixel-level annotation": "yes" if "annotations" in name else "no",
        "accuracy % (top-k)": 100 * r["accuracy"], "AUC (top-k)": r["auc"] if r["auc"] is not None else "",
        "accuracy % (sampling)": 100 * r["accuracy_sampling"],
        "peak tensors (MiB)": memory[name]["torch_mb"], "peak numpy (MiB)": memory[name]["numpy_mb"],
        **({"peak GPU (MiB)": memory[name]["device_mb"]} if "device_mb" in memory[name] else {}),
        "time per slide (s)": r["seconds_median"], "test slides": r["n"],
    } for name, r in results.items()]


# ------------------------------------------------------------------------------------------- figures
@dataclass
class SlideViews:
    """What the figures draw of each test slide, by slide id: thumbnail, tissue tiles, level-0 size, annotation."""

    thumbs: dict[str, np.ndarray]  # [h, w, 3] uint8
    tissue: dict[str, np.ndarray]  # [n_rows, n_cols] bool: tiles with tissue
    dims: dict[str, tuple[int, int]]  # (W, H) at level 0
    rois: dict[str, camelyon16.LesionROI | None]


def slide_views(records: Sequence[camelyon16.SlideRecord], tile: int, tissue_side: int, thumb: int = 768) -> SlideViews:
    """Read each slide's thumbnail (`thumb` pixels a side), its tissue tiles of `tile`^2, its size and its annotation."""
    views = SlideViews({}, {}, {}, {})
    for r in records:
        with SlideReader(r.path) as reader:
            views.thumbs[r.slide_id] = reader.thumbnail(thumb)
            views.tissue[r.slide_id] = reader.tissue((tile, tile), tissue_side).numpy()
            views.dims[r.slide_id] = reader.slide.dimensions
            views.rois[r.slide_id] = roi_of(r)
    return views


def contours(roi: camelyon16.LesionROI | None) -> list[np.ndarray]:
    """The tumour polygons of an annotation, [K, 2] (x, y) each."""
    return [] if roi is None else [p.coordinates for p in roi.polygons if p.group in camelyon16.TUMOUR_GROUPS]


def attention_figure(records: Sequence[camelyon16.SlideRecord], preds: Sequence[SlidePrediction], views: SlideViews,
                     title: str) -> Any:
    """Figures 1 and 6: alpha over each slide's tissue tiles, its annotation, the top-k tiles and sub-tiles (4 a row)."""
    import matplotlib.pyplot as plt

    cols = min(4, len(preds))
    rows = -(-len(preds) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False)
    for ax, r, p in zip(axes.flat, records, preds):
        show_slide(ax, views.thumbs[r.slide_id], views.dims[r.slide_id], alpha=p.alpha, tile_size=p.tile_size,
                   tissue=views.tissue[r.slide_id], contours=contours(views.rois[r.slide_id]), tile_boxes=p.tile_boxes(),
                   subtile_boxes=p.subtile_boxes(),
                   title=f"{r.slide_id} ({'tumour' if r.label else 'normal'}): p(tumour) = {p.probs[1]:.2f}")
    for ax in axes.flat[len(preds):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def zoom_in_figure(model: SlideZoomIn, pairs: Sequence[tuple[camelyon16.SlideRecord, SlidePrediction]],
                   views: SlideViews, s2: float, title: str) -> Any:
    """Figure 6e, a row per slide: the slide and its top tile, the tile at s2 with beta, the top sub-tile at level 0."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pairs), 3, figsize=(10, 3.4 * len(pairs)), squeeze=False)
    for row, (r, p) in zip(axes, pairs):
        th, tw = p.tile_size
        top_tile = int(p.tiles[0])
        n_cols = p.alpha.shape[1]
        ty, tx = (top_tile // n_cols) * th, (top_tile % n_cols) * tw
        polygons = contours(views.rois[r.slide_id])
        show_slide(row[0], views.thumbs[r.slide_id], views.dims[r.slide_id], contours=polygons,
                   tile_boxes=np.array([[tx, ty, tw, th]]), title=f"{r.slide_id}: its top tile (yellow)")
        with model.open(r.path) as reader, torch.no_grad():
            tile_img = reader.tile_view(ty, tx, (th, tw), s2, standardise=False)[0]  # [3, h, w]
            tile_img = tile_img.permute(1, 2, 0).clamp(0, 255).byte().numpy()
            beta = model.second_stage(reader, torch.tensor([top_tile]))[0].reshape(model.net.subview_size).cpu().numpy()
            rr, cc = (int(v) for v in p.centers[0])
            ph, pw = p.patch_size
            sub_img = reader.patches(torch.tensor([rr]), torch.tensor([cc]), (ph, pw), standardise=False)[0]
            sub_img = sub_img.permute(1, 2, 0).byte().numpy()  # [ph, pw, 3]
        in_tile = [c - np.array([tx, ty]) for c in polygons]
        boxes = p.subtile_boxes()[p.tiles == top_tile] - np.array([tx, ty, 0, 0])
        show_slide(row[1], tile_img, (tw, th), alpha=beta, tile_size=(th / beta.shape[0], tw / beta.shape[1]),
                   contours=in_tile, subtile_boxes=boxes, heat=0.3,
                   title=f"tile at s2 = {s2:.3g} with beta and its sub-tiles")
        show_slide(row[2], sub_img, (pw, ph), contours=[c - np.array([cc - pw // 2, rr - ph // 2]) for c in polygons],
                   title=f"top sub-tile, full resolution ({pw}x{ph})")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def tile_attention_and_ratios(model: SlideZoomIn, preds: Sequence[SlidePrediction],
                              records: Sequence[camelyon16.SlideRecord], views: SlideViews
                              ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """alpha_c, the metastasis-to-tile ratio and the tissue mask, each [n_rows, n_cols], per annotated test slide.

    A prediction is matched to its record by the slide's path (`evaluate_slides` leaves out the slides it could
    not predict); an annotated slide without a prediction is left out.
    """
    by_slide = {p.slide: p for p in preds}
    alphas, ratios, masks = [], [], []
    for r in records:
        p = by_slide.get(str(r.path))
        if views.rois[r.slide_id] is None or p is None:
            continue
        with model.open(r.path, roi=views.rois[r.slide_id]) as reader:
            alphas.append(p.alpha)  # [n_rows, n_cols]
            ratios.append(roi_tiles(model, reader)[0])  # [n_rows, n_cols]
            masks.append(views.tissue[r.slide_id])
    return alphas, ratios, masks


def attention_vs_ratio(models: Mapping[str, SlideZoomIn], predictions: Mapping[str, Sequence[SlidePrediction]],
                       records: Sequence[camelyon16.SlideRecord], views: SlideViews,
                       title: str) -> tuple[dict[str, dict[str, Any]], Any]:
    """Figure 7: alpha_c against the metastasis-to-tile ratio over the annotated test slides' tissue tiles.

    Returns Spearman's rho per model (`attention_roi_spearman`) and the figure, a panel per model; with no
    annotated test slide, says so and returns no rho.
    """
    import matplotlib.pyplot as plt

    spearman, fig = {}, plt.figure(figsize=(4.2 * len(models), 3.4))
    for k, (name, preds) in enumerate(predictions.items()):
        alphas, ratios, masks = tile_attention_and_ratios(models[name], preds, records, views)
        if not alphas:
            print("no annotated test slide: no correlation to compute")
            break
        spearman[name] = attention_roi_spearman(alphas, ratios, masks)
        ax = fig.add_subplot(1, len(models), k + 1)
        for a, q, m in zip(alphas, ratios, masks):
            ax.scatter(a[m], q[m], s=6, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("alpha_c (tile attention)")
        ax.set_ylabel("metastasis-to-tile ratio")
        ax.set_title(f"{name}: rho = {spearman[name]['rho']:.3f}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return spearman, fig


def spearman_rows(spearman: Mapping[str, Mapping[str, Any]], paper_rho: float) -> list[dict[str, Any]]:
    """Figure 7's rho per model, with the paper's value beside the models trained without annotations."""
    return [{"model": n, "Spearman rho (measured)": s["rho"], "p-value": s["p_value"], "tiles": s["n_tiles"],
             "tiles with metastasis": s["n_tiles_with_roi"], "paper reports": paper_rho if "annotations" not in n else ""}
            for n, s in spearman.items()]


# ------------------------------------------------------------------------------ where training stopped
def training_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], constant: float,
                    warmups: Mapping[str, int], title: str) -> Any:
    """Per epoch: eq. 12's cross-entropy of each run (left; the constant prediction's dotted) and sec. 2.2's L_con of
    the runs that had it (right).

    `warmups[name]` is the number of epochs a run trained without L_con: a run whose warm-up is every epoch is left
    out of the right panel, and a dashed line marks each warm-up's end there. A point is the mean over a run's
    mini-batches, as `fit_slides` records it. (`contrastive.contrastive_figure` is its counterpart for `run_method`'s
    results, with the attention probe beside it.)
    """
    import matplotlib.pyplot as plt

    fig, (ax_ce, ax_con) = plt.subplots(1, 2, figsize=(9, 3.4))
    for k, (name, hist) in enumerate(histories.items()):
        epochs = range(1, len(hist) + 1)
        ax_ce.plot(epochs, [h["ce"] for h in hist], "o-", ms=3, color=f"C{k}", label=name)
        if warmups[name] < len(hist):
            ax_con.plot(epochs, [h["contrastive"] for h in hist], "o-", ms=3, color=f"C{k}", label=name)
    ax_ce.axhline(constant, color="gray", ls=":", lw=1, label=f"best constant prediction ({constant:.3f})")
    for w in sorted({warmups[n] for n, hist in histories.items() if warmups[n] < len(hist)}):
        ax_con.axvline(w + 0.5, color="gray", ls="--", lw=0.8)
    ax_ce.set_xlabel("epoch")
    ax_con.set_xlabel("epoch (dashed: L_con switched on)")
    for ax, ylabel in ((ax_ce, "training cross-entropy"), (ax_con, "contrastive loss L_con")):
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


INITIAL, NO_CON = "Zoom-In, initial weights", "Zoom-In without L_con"  # NO_CON is NAMES' plain LeNet + a suffix


class TermStudy(NamedTuple):
    """What `term_study` returns, by run name, in the order of its table: before training, with L_con, without it,
    with annotations (where the profile trains them)."""

    histories: dict[str, list[dict[str, Any]]]  # none for the initial weights
    warmups: dict[str, int]  # the epochs each run trained without L_con (all of them for NO_CON)
    results: dict[str, dict[str, Any]]  # top-k metrics on the test slides (`evaluate_slides`)
    spearman: dict[str, dict[str, Any]]  # figure 7's rho; empty without an annotated test slide
    models: dict[str, SlideZoomIn]  # the two models measured here: INITIAL and NO_CON


def term_study(cfg: Mapping[str, Any], stats: tuple[torch.Tensor, torch.Tensor], readers: Sequence[SlideReader],
               test: Sequence[camelyon16.SlideRecord], views: SlideViews,
               histories: Mapping[str, list[dict[str, Any]]], results: Mapping[str, Mapping[str, Any]],
               spearman: Mapping[str, Mapping[str, Any]], *, seed: int, out: Path, resume: bool = False) -> TermStudy:
    """The plain LeNet Zoom-In twice more: with the weights it starts training from, and trained without L_con (the
    warm-up lasting every epoch), both from `seed` as in `train_variants`, so the first `cfg["warmup"]` epochs are
    the chapter's own; each on the test slides (top-k) with figure 7's rho, beside the chapter's runs (their
    `histories`, top-k `results` and `spearman`, as `train_variants`, `evaluate_variants` and `attention_vs_ratio`
    give them).

    The run without L_con keeps its checkpoint beside the others, in `out/checkpoints/`.
    """
    extra = {INITIAL: initial_model(partial(slide_zoomin, cfg, stats, "lenet"), seed, "cpu")[0]}  # train_variants' start
    without = train_variants(dict(cfg, warmup=cfg["epochs"], variants=("lenet",), pixel=False), stats, readers,
                             seed=seed, out=out, resume=resume, suffix=NO_CON.removeprefix(NAMES[("lenet", False)]))
    extra[NO_CON] = without.models[NO_CON]
    measured, rho = {}, {}
    for name, model in extra.items():
        measured[name], preds = _topk_on(model, test)
        alphas, ratios, masks = tile_attention_and_ratios(model, preds, test, views)
        if alphas:
            rho[name] = attention_roi_spearman(alphas, ratios, masks)
    order = [INITIAL, "Zoom-In", NO_CON] + [n for n in histories if n != "Zoom-In"]
    runs = {INITIAL: [], **histories, NO_CON: without.histories[NO_CON]}
    warmups = {n: cfg["warmup"] for n in order} | {INITIAL: 0, NO_CON: cfg["epochs"]}
    measured = {**{n: results[n] for n in histories}, **measured}
    rho = {**spearman, **rho}
    return TermStudy({n: runs[n] for n in order}, {n: warmups[n] for n in order}, {n: measured[n] for n in order},
                     {n: rho[n] for n in order if n in rho}, extra)


def plateau_facts(study: TermStudy, last: int = 5) -> dict[str, dict[str, Any]]:
    """Per run: first and last-`last`-epoch mean cross-entropy, L_con's highest and last value after its warm-up,
    top-k accuracy and AUC, figure 7's rho (overall, and how many annotated test slides have it above and below 0, of
    `slides`, which counts a slide whose rho is undefined too); NaN where a run has no such measure (no history
    before training, no L_con, no annotated slide)."""
    facts = {}
    for name, hist in study.histories.items():
        con = [h["contrastive"] for h in hist[study.warmups[name]:]]
        rho = study.spearman.get(name, {})
        slides = rho.get("per_slide", [])
        result = study.results.get(name, {})
        facts[name] = {"ce_first": hist[0]["ce"] if hist else math.nan,
                       "ce_last": float(np.mean([h["ce"] for h in hist[-last:]])) if hist else math.nan,
                       "last_epochs": min(last, len(hist)),
                       "con_highest": max(con) if con else math.nan, "con_last": con[-1] if con else math.nan,
                       "accuracy": result.get("accuracy", math.nan),
                       "auc": math.nan if result.get("auc") is None else result["auc"],
                       "rho": rho.get("rho", math.nan), "slides_above_zero": sum(r > 0 for r in slides),
                       "slides_below_zero": sum(r < 0 for r in slides), "slides": len(slides)}  # NaN: neither
    return facts


def plateau_rows(facts: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A table row per run of `plateau_facts` ("" where a run has no such measure)."""
    def cell(x: float) -> Any:
        return "" if math.isnan(x) else x

    last = max(f["last_epochs"] for f in facts.values())
    return [{"run": name, "cross-entropy, first epoch": cell(f["ce_first"]),
             f"cross-entropy, mean of the last {last} epochs": cell(f["ce_last"]),
             "L_con, highest": cell(f["con_highest"]), "L_con, last": cell(f["con_last"]),
             "test accuracy % (top-k)": cell(100 * f["accuracy"]), "AUC (top-k)": cell(f["auc"]),
             "figure 7's rho": cell(f["rho"]),
             "annotated slides with rho > 0 / < 0": f"{f['slides_above_zero']} / {f['slides_below_zero']} of {f['slides']}"
             if f["slides"] else ""} for name, f in facts.items()]


# ------------------------------------------------------------------------------ memory against size
def memory_sweep(zoom_model: SlideZoomIn, stats: tuple[torch.Tensor, torch.Tensor], cfg: Mapping[str, Any],
                 seed: int) -> list[dict[str, Any]]:
    """Peak host memory of one prediction on stand-in slides of `cfg["memory_sides"]`^2 pixels, a row per size.

    Zoom-In is the trained model; ATS (ATS sec. 3.3) has the same a, f, N and sub-tile size at s = s2, untrained
    (seeded with `seed`), and runs only while a slide has at most `cfg["ats_max_pixels"]` pixels. The slides are
    written once into the data folder (`camelyon16_synthetic/large`).
    """
    large_dir = cache_dir("camelyon16_synthetic") / "large"
    large_dir.mkdir(parents=True, exist_ok=True)
    memory_rows = []
    torch.manual_seed(seed)
    ats_model = SlideATS(builders.ats(in_channels=3, n_classes=2, scale=cfg["s2"], patch_size=cfg["patch"],
                                      n_patches=cfg["n"]), stats).to(module_device(zoom_model))  # beside Zoom-In
    for side in cfg["memory_sides"]:
        path = large_dir / f"slide_{side}.tif"
        if not path.is_file():
            t0 = time.perf_counter()
            synthetic_slides.write_large_slide(path, side, seed=seed, progress=False)
            print(f"wrote {path.name} ({side}^2 = {side * side / 1e9:.2f} gigapixels) in {time.perf_counter() - t0:.0f} s")
        row = {"side": side, "pixels": side * side}
        last: dict[str, SlidePrediction] = {}

        def predict_zoomin() -> None:
            last.clear()  # the previous run's arrays are not counted in this run's peak
            last["p"] = zoom_model.predict_one(path)

        with lean_inference(zoom_model.net):
            row["zoomin"] = host_peak_memory(predict_zoomin, module_device(zoom_model))
        # the exact top-k opens tiles in rounds (a chunk of tile views at a time): how many it needed here
        row["zoomin"]["opened"] = last["p"].opened
        row["zoomin"]["tissue_tiles"] = int((last["p"].alpha > 0).sum())
        if side * side <= cfg["ats_max_pixels"]:
            with lean_inference(ats_model.net):
                row["ats"] = host_peak_memory(lambda: ats_model.predict_one(path), module_device(ats_model))
        memory_rows.append(row)
        ats_text = f"ATS {row['ats']['torch_mb']:.1f} MiB tensors" if "ats" in row else "ATS not run (extrapolated below)"
        print(f"{side}^2 ({side * side:.1e} px): Zoom-In {row['zoomin']['torch_mb']:.2f} MiB tensors + "
              f"{row['zoomin']['numpy_mb']:.2f} MiB numpy, {row['zoomin']['opened']} of "
              f"{row['zoomin']['tissue_tiles']} tissue tiles opened; {ats_text}")
    return memory_rows


@dataclass
class MemoryCurve:
    """The sweep as arrays (MiB against level-0 pixels) and ATS's tensors fitted by a line in the number of pixels."""

    pixels: np.ndarray  # [S] every size
    zoom_t: np.ndarray  # [S] Zoom-In's tensors
    zoom_n: np.ndarray  # [S] Zoom-In's numpy buffers
    ats_px: np.ndarray  # [A] the sizes at which ATS ran
    ats_t: np.ndarray  # [A] ATS's tensors
    slope: float  # MiB per pixel
    intercept: float  # MiB

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> MemoryCurve:
        """From `memory_sweep`'s rows; the line is fitted to ATS's measurements (least squares)."""
        ats_px = np.array([r["pixels"] for r in rows if "ats" in r], dtype=float)
        ats_t = np.array([r["ats"]["torch_mb"] for r in rows if "ats" in r])
        slope, intercept = np.polyfit(ats_px, ats_t, 1)  # MiB per pixel, MiB: a line in the number of pixels
        return cls(np.array([r["pixels"] for r in rows], dtype=float), np.array([r["zoomin"]["torch_mb"] for r in rows]),
                   np.array([r["zoomin"]["numpy_mb"] for r in rows]), ats_px, ats_t, slope, intercept)

    def exponent(self, peaks: np.ndarray, pixels: np.ndarray | None = None) -> float:
        """b in peak ~ pixels^b, fitted by least squares on log-log: 0 for a peak that does not grow with the slide,
        1/2 for one that grows with its side (a strip of the view), 1 for one that grows with its pixels (a whole view)."""
        x = np.log(self.pixels if pixels is None else pixels)  # [S]
        return float(np.polyfit(x, np.log(peaks), 1)[0])

    @property
    def ats_line(self) -> np.ndarray:
        """[S] the fitted line at every size."""
        return self.intercept + self.slope * self.pixels


def memory_figure(curve: MemoryCurve, title: str) -> Any:
    """Peak memory against slide size, log-log: Zoom-In (tensors; + numpy), ATS measured and, beyond, its line dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(curve.pixels, curve.zoom_t, "o-", color="C0", label="Zoom-In, tensors (measured)")
    ax.plot(curve.pixels, curve.zoom_t + curve.zoom_n, "o:", color="C0", alpha=0.6,
            label="Zoom-In, tensors + numpy (measured, upper bound)")
    ax.plot(curve.ats_px, curve.ats_t, "s-", color="C3", label="one-stage ATS at s2, tensors (measured)")
    beyond = curve.pixels >= curve.ats_px.max()
    if beyond.sum() > 1:
        ax.plot(curve.pixels[beyond], curve.ats_line[beyond], "s--", color="C3", mfc="none",
                label="ATS: fitted line, extrapolated")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("slide size (pixels at level 0)")
    ax.set_ylabel("peak memory at inference (MiB)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def memory_rows_table(rows: Sequence[Mapping[str, Any]], ats_line: np.ndarray) -> list[dict[str, Any]]:
    """The sweep as a table: Zoom-In's and ATS's peaks and times per size, ATS's fitted line where it did not run."""
    return [{"pixels": f"{r['pixels']:.2e}", "Zoom-In tensors (MiB)": r["zoomin"]["torch_mb"],
             "Zoom-In numpy (MiB)": r["zoomin"]["numpy_mb"], "Zoom-In time (s)": r["zoomin"]["seconds"],
             **({"Zoom-In tiles opened": f"{r['zoomin']['opened']} of {r['zoomin']['tissue_tiles']}"}
                if "opened" in r["zoomin"] else {}),
             "ATS tensors (MiB)": r["ats"]["torch_mb"] if "ats" in r else f"{format_cell(float(ats_line[k]), 4)} (extrapolated)",
             "ATS numpy (MiB)": r["ats"]["numpy_mb"] if "ats" in r else "",
             "ATS time (s)": r["ats"]["seconds"] if "ats" in r else ""}
            for k, r in enumerate(rows)]
